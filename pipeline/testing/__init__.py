"""Test-support code for the pipeline (the loopback fake OpenAI server)."""
