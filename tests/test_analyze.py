"""One article through the model: both calls, validation, re-asks, cut-offs, refusals, replay and record.

The model is the scripted fake, answering with the real fixture answers from ``fixtures/recordings``
unless a test scripts a deviation for one (call, attempt).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.analyze import Analyzer, ArticleOutcome
from pipeline.config import Settings
from pipeline.errors import ModelUnavailable, RecordingStale
from pipeline.ingest.article import Article
from pipeline.model.base import ChatModel, ModelReply, ModelRequest, reply_from_body
from pipeline.model.fake import ScriptedModel, text_reply
from pipeline.model.replay import RecordingModel, ReplayModel, request_sha256
from pipeline.prompts import PromptBook
from pipeline.schema import LANGS, ChineseAnswer, EnglishAnswer, Usage
from pipeline.testing.fixtures import first_request
from tests.conftest import RECORDINGS

Outcome = ModelReply | BaseException

EN_ARTICLE = "ecb-cuts-rates-to-1-75-as-inflation-undershoots-target-4cd906df18"
ZH_ARTICLE = "zh-rrr-cut-c355db2d2c"
RECORDED_IDS = sorted(p.name for p in RECORDINGS.iterdir() if p.is_dir())


def good_content(article_id: str, call: str) -> str:
    """The good answer of one call, as the recording holds it."""
    document = json.loads((RECORDINGS / article_id / f"{call}-0.json").read_text(encoding="utf-8"))
    content = document["response"]["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


def good_answer(article_id: str, call: str) -> dict[str, Any]:
    answer = json.loads(good_content(article_id, call))
    assert isinstance(answer, dict)
    return answer


class Desk:
    """A scripted model answering with the fixture's good answers, except where a deviation is scripted.

    `deviations` answers one (call, attempt); `always` answers every other attempt of a call.
    """

    def __init__(
        self,
        article: Article,
        deviations: Mapping[tuple[str, int], Outcome] | None = None,
        always: Mapping[str, Outcome] | None = None,
    ) -> None:
        self.article = article
        self.good = {call: good_content(article.id, call) for call in LANGS}
        self.deviations = dict(deviations or {})
        self.always = dict(always or {})
        self.replies: list[ModelReply] = []
        self.model = ScriptedModel(self.script)

    def script(self, request: ModelRequest) -> Outcome:
        key = request.key
        outcome: Outcome
        if (key.call, key.attempt) in self.deviations:
            outcome = self.deviations[(key.call, key.attempt)]
        elif key.call in self.always:
            outcome = self.always[key.call]
        else:
            outcome = text_reply(self.good[key.call])
        if isinstance(outcome, ModelReply):
            self.replies.append(outcome)
        return outcome

    def requests(self, call: str) -> list[ModelRequest]:
        return [r for r in self.model.requests if r.key.call == call]

    def usage(self) -> Usage:
        total = Usage()
        for reply in self.replies:
            total = total + reply.usage
        return total

    def run(self, settings: Settings | None = None) -> ArticleOutcome:
        return analyze(self.model, self.article, settings)


def analyze(model: ChatModel, article: Article, settings: Settings | None = None) -> ArticleOutcome:
    settings = settings or Settings()
    return asyncio.run(Analyzer(model, PromptBook(settings), settings).analyze(article))


def by_id(articles: list[Article], article_id: str) -> Article:
    found = [a for a in articles if a.id == article_id]
    assert found, f"fixture article {article_id} is loaded"
    return found[0]


@pytest.fixture
def article(fixture_articles: list[Article]) -> Article:
    return by_id(fixture_articles, EN_ARTICLE)


def bad_json_reply() -> ModelReply:
    return text_reply('{"zh": {"title": "欧洲央行降息",')


def english_summary_reply() -> ModelReply:
    answer = good_answer(EN_ARTICLE, "zh")
    answer["zh"]["summary"] = "The ECB cut its deposit rate to 1.75% as inflation undershot its target."
    return text_reply(answer)


def two_tldr_reply() -> ModelReply:
    answer = good_answer(EN_ARTICLE, "zh")
    answer["zh"]["tldr"] = answer["zh"]["tldr"][:2]
    return text_reply(answer)


def english_tag_reply() -> ModelReply:
    answer = good_answer(EN_ARTICLE, "en")
    answer["tags"][0]["zh"] = "Monetary policy"
    return text_reply(answer)


# --- happy path ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("article_id", [EN_ARTICLE, ZH_ARTICLE])
def test_happy_path_makes_one_en_and_one_zh_call_at_attempt_zero(
    fixture_articles: list[Article], article_id: str
) -> None:
    desk = Desk(by_id(fixture_articles, article_id))
    outcome = desk.run()
    assert outcome.error is None
    assert sorted((r.key.call, r.key.attempt) for r in desk.model.requests) == [("en", 0), ("zh", 0)]
    assert outcome.calls == 2
    assert outcome.stale is False


@pytest.mark.parametrize("article_id", [EN_ARTICLE, ZH_ARTICLE])
def test_happy_path_analysis_has_both_sections_and_scores_and_tags_from_the_en_answer(
    fixture_articles: list[Article], article_id: str
) -> None:
    article = by_id(fixture_articles, article_id)
    outcome = Desk(article).run()
    en = EnglishAnswer.model_validate(good_answer(article_id, "en"))
    zh = ChineseAnswer.model_validate(good_answer(article_id, "zh"))
    assert outcome.analysis is not None
    assert outcome.analysis.scores == en.scores
    assert outcome.analysis.tags == en.tags
    assert outcome.analysis.en == en.en
    assert outcome.analysis.zh == zh.zh
    assert outcome.analysis.article.id == article.id
    assert outcome.analysis.article.content_sha256 == article.content_sha256


def test_happy_path_disclaimer_defaults_to_the_bilingual_texts(article: Article) -> None:
    outcome = Desk(article).run()
    assert outcome.analysis is not None
    assert outcome.analysis.disclaimer.en == "The above content is generated by AI and is for reference only."
    assert outcome.analysis.disclaimer.zh == "免责声明：以上内容由 AI 生成，仅供参考。"


def test_disclaimer_comes_from_settings(article: Article) -> None:
    settings = Settings(disclaimer_en="Machine-written.", disclaimer_zh="机器撰写。")
    outcome = Desk(article).run(settings)
    assert outcome.analysis is not None
    assert (outcome.analysis.disclaimer.en, outcome.analysis.disclaimer.zh) == (
        "Machine-written.",
        "机器撰写。",
    )


def test_happy_path_generation_records_model_prompt_version_usage_and_calls(article: Article) -> None:
    settings = Settings(model="test-model-1")
    desk = Desk(article)
    outcome = desk.run(settings)
    assert outcome.analysis is not None
    generation = outcome.analysis.generation
    assert generation.model == "test-model-1"
    assert generation.prompt_version == PromptBook(settings).version
    assert len(desk.replies) == 2
    expected = desk.replies[0].usage + desk.replies[1].usage
    assert expected.completion_tokens > 0
    assert generation.usage == expected
    assert outcome.usage == expected
    assert generation.calls == 2
    assert generation.ai_generated is True


# --- the requests -------------------------------------------------------------------------------------


def test_request_bodies_order_messages_and_ask_for_strict_json_schema(article: Article) -> None:
    desk = Desk(article)
    desk.run()
    bodies = {r.key.call: r.body for r in desk.model.requests}
    for request in desk.model.requests:
        assert request.key.article_id == article.id
        assert request.prompt_version == PromptBook(Settings()).version
        body = request.body
        assert [m["role"] for m in body["messages"]] == ["system", "user", "user"]
        assert body["model"] == Settings().model
        assert body["max_completion_tokens"] == Settings().max_output_tokens
        response_format = body["response_format"]
        assert response_format["type"] == "json_schema"
        assert response_format["json_schema"]["strict"] is True
        assert response_format["json_schema"]["schema"]["additionalProperties"] is False
    assert bodies["en"]["response_format"]["json_schema"]["name"] == "english_answer"
    assert bodies["zh"]["response_format"]["json_schema"]["name"] == "chinese_answer"
    # The shared prefix (instructions, then the fenced article) is identical for both calls.
    assert bodies["en"]["messages"][:2] == bodies["zh"]["messages"][:2]
    assert bodies["en"]["messages"][2] != bodies["zh"]["messages"][2]


class BarrierModel:
    """Answers only once both calls are in flight; a sequential caller would time out."""

    def __init__(self, article: Article) -> None:
        self.good = {call: good_content(article.id, call) for call in LANGS}
        self.arrived: set[str] = set()
        self.both: asyncio.Event | None = None

    async def complete(self, request: ModelRequest) -> ModelReply:
        if self.both is None:
            self.both = asyncio.Event()
        self.arrived.add(request.key.call)
        if self.arrived == set(LANGS):
            self.both.set()
        await asyncio.wait_for(self.both.wait(), timeout=2)
        return text_reply(self.good[request.key.call])

    async def aclose(self) -> None:
        return None


def test_both_calls_are_in_flight_at_once(article: Article) -> None:
    model = BarrierModel(article)
    outcome = analyze(model, article)
    assert outcome.error is None
    assert model.arrived == {"en", "zh"}


# --- re-asks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_reply", "expected_line"),
    [
        pytest.param(bad_json_reply, "- answer: the reply is not valid JSON", id="invalid-json"),
        pytest.param(english_summary_reply, "- zh.summary: not written in Chinese", id="english-summary"),
        pytest.param(two_tldr_reply, "- zh.tldr: List should have at least 3 items", id="two-tldr"),
    ],
)
def test_failing_zh_answer_is_reasked_alone_with_its_findings(
    article: Article, bad_reply: Any, expected_line: str
) -> None:
    bad = bad_reply()
    desk = Desk(article, deviations={("zh", 0): bad})
    outcome = desk.run()

    assert outcome.error is None
    assert outcome.analysis is not None
    assert len(desk.requests("en")) == 1
    assert [r.key.attempt for r in desk.requests("zh")] == [0, 1]
    first, reask = (r.body["messages"] for r in desk.requests("zh"))
    assert reask[: len(first)] == first
    assert reask[-2] == {"role": "assistant", "content": bad.content}
    assert reask[-1]["role"] == "user"
    assert expected_line in reask[-1]["content"]
    assert len(reask) == len(first) + 2
    assert outcome.calls == 3
    assert outcome.analysis.generation.calls == 3
    assert len(desk.replies) == 3
    assert outcome.usage == desk.usage()
    assert outcome.analysis.generation.usage == desk.usage()


def test_scores_and_tags_findings_reask_the_en_call(article: Article) -> None:
    desk = Desk(article, deviations={("en", 0): english_tag_reply()})
    outcome = desk.run()
    assert outcome.error is None
    assert [r.key.attempt for r in desk.requests("en")] == [0, 1]
    assert len(desk.requests("zh")) == 1
    reask = desk.requests("en")[1].body["messages"][-1]["content"]
    assert "- tags[0].zh: the Chinese tag label is not written in Chinese" in reask
    assert outcome.calls == 3


@pytest.mark.parametrize(
    ("call", "bad_reply", "check"),
    [
        pytest.param("zh", bad_json_reply, "schema", id="zh-invalid-json"),
        pytest.param("zh", english_summary_reply, "language", id="zh-english-summary"),
        pytest.param("en", english_tag_reply, "language", id="en-english-tag-label"),
    ],
)
def test_answer_that_always_fails_stops_after_max_reasks(
    article: Article, call: str, bad_reply: Any, check: str
) -> None:
    desk = Desk(article, always={call: bad_reply()})
    outcome = desk.run()
    other = "en" if call == "zh" else "zh"
    assert len(desk.requests(call)) == 1 + Settings().max_reasks == 3
    assert len(desk.requests(other)) == 1
    assert outcome.analysis is None
    assert outcome.error is not None
    assert f"the {call} answer still fails" in outcome.error
    assert f"[error {check}]" in outcome.error
    assert outcome.findings
    assert any(f.check == check and f.lang == call and f.is_error for f in outcome.findings)
    assert outcome.calls == 4
    assert outcome.usage == desk.usage()


def test_max_reasks_zero_means_a_single_request(article: Article) -> None:
    desk = Desk(article, always={"zh": bad_json_reply()})
    outcome = desk.run(Settings(max_reasks=0))
    assert len(desk.requests("zh")) == 1
    assert outcome.analysis is None
    assert outcome.error is not None
    assert "not valid JSON" in outcome.error
    assert outcome.calls == 2


# --- replies cut off by the token limit ------------------------------------------------------------------


def cut_off(call: str) -> ModelReply:
    return text_reply(good_content(EN_ARTICLE, call)[:300], finish_reason="length")


@pytest.mark.parametrize("call", LANGS)
def test_cut_off_reply_is_asked_again_with_a_larger_limit_not_fed_back(article: Article, call: str) -> None:
    desk = Desk(article, deviations={(call, 0): cut_off(call)})
    outcome = desk.run()
    assert outcome.error is None
    first, again = desk.requests(call)
    assert again.key.attempt == 1
    assert again.body["messages"] == first.body["messages"]
    assert all(m["role"] != "assistant" for m in again.body["messages"])
    assert first.body["max_completion_tokens"] == 6000
    assert again.body["max_completion_tokens"] == 9000


def test_two_cut_offs_then_success_is_ok(article: Article) -> None:
    desk = Desk(article, deviations={("en", 0): cut_off("en"), ("en", 1): cut_off("en")})
    outcome = desk.run()
    assert outcome.error is None
    assert outcome.analysis is not None
    assert [r.body["max_completion_tokens"] for r in desk.requests("en")] == [6000, 9000, 13500]
    assert outcome.calls == 4
    assert outcome.usage == desk.usage()


def test_cut_offs_beyond_the_budget_fail_the_article(article: Article) -> None:
    desk = Desk(article, always={"zh": cut_off("zh")})
    outcome = desk.run()
    assert outcome.analysis is None
    assert outcome.error is not None
    assert "cut off" in outcome.error
    assert "cut off at 16000 tokens" in outcome.error and "max_output_tokens_ceiling" in outcome.error
    assert [r.body["max_completion_tokens"] for r in desk.requests("zh")] == [6000, 9000, 13500, 16000]
    assert outcome.calls == 5


def test_a_higher_ceiling_allows_longer_replies(article: Article) -> None:
    """The error on a reply cut off at the ceiling says to raise it: doing so must help."""
    cut_offs = {("en", n): cut_off("en") for n in range(4)}
    outcome = Desk(article, deviations=cut_offs).run(Settings(max_output_tokens_ceiling=32000))
    assert outcome.error is None and outcome.analysis is not None
    desk = Desk(article, deviations=cut_offs)
    desk.run(Settings(max_output_tokens_ceiling=32000))
    assert [r.body["max_completion_tokens"] for r in desk.requests("en")] == [6000, 9000, 13500, 20250, 30375]


def test_token_limit_never_grows_past_the_ceiling(article: Article) -> None:
    settings = Settings(max_output_tokens=6000, max_output_tokens_ceiling=7000)
    desk = Desk(article, always={"en": cut_off("en")})
    outcome = desk.run(settings)
    assert [r.body["max_completion_tokens"] for r in desk.requests("en")] == [6000, 7000]
    assert outcome.error is not None
    assert "cut off at 7000 tokens" in outcome.error


def test_token_limit_param_is_honoured_when_growing(article: Article) -> None:
    desk = Desk(article, deviations={("zh", 0): cut_off("zh")})
    outcome = desk.run(Settings(token_limit_param="max_tokens"))
    assert outcome.error is None
    assert [r.body["max_tokens"] for r in desk.requests("zh")] == [6000, 9000]
    assert all("max_completion_tokens" not in r.body for r in desk.model.requests)


# --- refusals, filters and model errors -------------------------------------------------------------------


@pytest.mark.parametrize("call", LANGS)
def test_refusal_fails_the_article_without_a_reask(article: Article, call: str) -> None:
    refusal = ModelReply(content=None, finish_reason="stop", refusal="I can't help with that request.")
    desk = Desk(article, deviations={(call, 0): refusal})
    outcome = desk.run()
    assert outcome.analysis is None
    assert outcome.error is not None
    assert "refused" in outcome.error
    assert "I can't help with that request." in outcome.error
    assert len(desk.requests(call)) == 1
    assert outcome.calls == 2


@pytest.mark.parametrize("call", LANGS)
def test_content_filter_stop_fails_the_article_without_a_reask(article: Article, call: str) -> None:
    desk = Desk(article, deviations={(call, 0): text_reply("", finish_reason="content_filter")})
    outcome = desk.run()
    assert outcome.analysis is None
    assert outcome.error is not None
    assert "content filter" in outcome.error
    assert len(desk.requests(call)) == 1
    assert outcome.calls == 2


def test_model_error_is_reported_and_the_other_calls_usage_is_still_counted(article: Article) -> None:
    message = "the endpoint answered 401 Unauthorized; check OPENAI_API_KEY"
    desk = Desk(article, deviations={("en", 0): ModelUnavailable(message)})
    outcome = desk.run()
    assert outcome.analysis is None
    assert outcome.error == message
    assert len(desk.replies) == 1  # only the zh call answered
    assert outcome.usage == desk.replies[0].usage
    assert outcome.usage.completion_tokens > 0
    assert outcome.calls == 2


def test_model_error_on_a_reask_keeps_the_usage_of_every_answered_attempt(article: Article) -> None:
    desk = Desk(article, deviations={("zh", 0): bad_json_reply(), ("zh", 1): ModelUnavailable("gone")})
    outcome = desk.run()
    assert outcome.error == "gone"
    assert outcome.calls == 3
    assert len(desk.replies) == 2
    assert outcome.usage == desk.usage()


# --- replay and record ------------------------------------------------------------------------------------


def test_every_fixture_article_has_a_recording(fixture_articles: list[Article]) -> None:
    assert len(fixture_articles) == 13
    assert sorted(a.id for a in fixture_articles) == RECORDED_IDS


@pytest.mark.parametrize("article_id", RECORDED_IDS)
def test_replay_of_the_fixture_recordings_is_ok_and_fresh(
    fixture_articles: list[Article], article_id: str
) -> None:
    outcome = analyze(ReplayModel(RECORDINGS), by_id(fixture_articles, article_id))
    assert outcome.error is None
    assert outcome.analysis is not None
    assert outcome.stale is False
    assert outcome.calls == 2
    assert outcome.usage.prompt_tokens > 0


def test_replay_without_a_recording_says_how_to_record(article: Article, tmp_path: Path) -> None:
    outcome = analyze(ReplayModel(tmp_path), article)
    assert outcome.analysis is None
    assert outcome.error is not None
    assert "--record" in outcome.error
    assert article.id in outcome.error


def test_replay_of_a_recording_of_another_request_is_stale_but_usable(
    article: Article, tmp_path: Path
) -> None:
    shutil.copytree(RECORDINGS / article.id, tmp_path / article.id)
    path = tmp_path / article.id / "en-0.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["prompt_version"] = "000000000000"
    document["request"]["messages"][0]["content"] += " (an older system prompt)"
    document["request_sha256"] = request_sha256(document["request"])
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")

    outcome = analyze(ReplayModel(tmp_path), article)
    assert outcome.stale is True
    assert outcome.analysis is not None
    assert outcome.error is None
    assert [(f.check, f.lang) for f in outcome.findings if f.check == "stale"] == [("stale", "en")]
    with pytest.raises(RecordingStale, match=r"en-0\.json was made for another request"):
        asyncio.run(
            ReplayModel(tmp_path, strict=True).complete(first_request(PromptBook(Settings()), article, "en"))
        )


def test_a_recording_of_the_same_request_is_current_whatever_its_prompt_version(
    article: Article, tmp_path: Path
) -> None:
    """An edit to one call's prompt changes the prompt version, but the other call's request is the
    same: its recording still answers it."""
    shutil.copytree(RECORDINGS / article.id, tmp_path / article.id)
    path = tmp_path / article.id / "en-0.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**document, "prompt_version": "000000000000"}), encoding="utf-8")
    outcome = analyze(ReplayModel(tmp_path, strict=True), article)
    assert outcome.stale is False and outcome.analysis is not None


def test_replay_of_a_broken_recording_fails_that_article(article: Article, tmp_path: Path) -> None:
    shutil.copytree(RECORDINGS / article.id, tmp_path / article.id)
    (tmp_path / article.id / "zh-0.json").write_text('{"response": ', encoding="utf-8")
    outcome = analyze(ReplayModel(tmp_path), article)
    assert outcome.analysis is None
    assert outcome.error is not None
    assert "not valid JSON" in outcome.error


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', '{"prompt_version": "0"}', '{"response": [1]}'])
def test_replay_of_a_recording_without_a_response_object_says_to_record_it_again(
    article: Article, tmp_path: Path, content: str
) -> None:
    shutil.copytree(RECORDINGS / article.id, tmp_path / article.id)
    path = tmp_path / article.id / "zh-0.json"
    path.write_text(content, encoding="utf-8")
    outcome = analyze(ReplayModel(tmp_path), article)
    assert outcome.analysis is None
    assert outcome.error is not None
    assert str(path) in outcome.error and "record it again" in outcome.error


@pytest.mark.parametrize(
    "body",
    [
        {"choices": "x"},
        {"choices": [5]},
        {"choices": [{"message": "hi"}]},
        {"choices": [{"message": {"content": 7, "refusal": ["no"]}}]},
        {"choices": [{"message": {}}], "usage": [1]},
        {"usage": {"prompt_tokens": "many", "completion_tokens": None, "prompt_tokens_details": 3}},
    ],
)
def test_a_reply_body_of_the_wrong_shape_reads_as_a_reply_with_no_answer(body: dict[str, Any]) -> None:
    reply = reply_from_body(body)
    assert reply.content is None and reply.refusal is None
    assert reply.usage == Usage()


def test_token_counts_written_as_floats_or_digits_are_read() -> None:
    body = {"usage": {"prompt_tokens": 1200.0, "completion_tokens": "340",
                      "prompt_tokens_details": {"cached_tokens": -5}}}  # fmt: skip
    assert reply_from_body(body).usage == Usage(prompt_tokens=1200, cached_tokens=0, completion_tokens=340)


def test_recording_model_writes_one_file_per_call_without_secrets(
    article: Article, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-1234")
    desk = Desk(article)
    outcome = analyze(RecordingModel(desk.model, tmp_path), article)
    assert outcome.error is None

    folder = tmp_path / article.id
    assert sorted(p.name for p in folder.iterdir()) == ["en-0.json", "zh-0.json"]
    sent = {r.key.call: r for r in desk.model.requests}
    for call in LANGS:
        text = (folder / f"{call}-0.json").read_text(encoding="utf-8")
        assert "authorization" not in text.lower()
        assert "api_key" not in text.lower()
        assert "sk-test-not-a-real-key-1234" not in text
        document = json.loads(text)
        assert set(document) == {"key", "prompt_version", "request_sha256", "request", "response"}
        assert document["key"] == {"article_id": article.id, "call": call, "attempt": 0}
        assert document["prompt_version"] == PromptBook(Settings()).version
        assert document["request"] == sent[call].body
        assert document["request_sha256"] == request_sha256(sent[call].body)
        assert document["response"]["choices"][0]["message"]["content"] == desk.good[call]


def test_recordings_replay_to_the_same_analysis(article: Article, tmp_path: Path) -> None:
    desk = Desk(article, deviations={("zh", 0): bad_json_reply()})
    recorded = analyze(RecordingModel(desk.model, tmp_path), article)
    assert sorted(p.name for p in (tmp_path / article.id).iterdir()) == [
        "en-0.json",
        "zh-0.json",
        "zh-1.json",
    ]

    replayed = analyze(ReplayModel(tmp_path), article)
    assert recorded.analysis is not None and replayed.analysis is not None
    assert replayed.analysis.en == recorded.analysis.en
    assert replayed.analysis.zh == recorded.analysis.zh
    assert replayed.calls == 3
    assert replayed.stale is False
