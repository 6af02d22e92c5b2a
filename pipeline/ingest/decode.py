"""Bytes to text: BOMs, UTF-8, declared HTML charsets, GB18030/GBK, Big5 and detection."""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-]+)""", re.IGNORECASE)
# Declared names that are narrower than what real pages contain.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "gb_2312-80": "gb18030", "big5": "big5hkscs"}
_HAN = re.compile(r"[\u4e00-\u9fff]")


class UndecodableError(ValueError):
    """The bytes are not text in any encoding we can identify."""


def looks_binary(data: bytes) -> bool:
    """NUL bytes anywhere (UTF-16 text, which has them, starts with its byte-order mark)."""
    boms = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)  # UTF-32 LE starts like UTF-16 LE
    if data.startswith(boms):
        return False
    return b"\x00" in data


def declared_html_charset(data: bytes) -> str | None:
    """The charset a page declares in a <meta> anywhere in its first 16 KiB."""
    match = _META_CHARSET.search(data[:16384])
    if not match:
        return None
    name = match.group(1).decode("ascii", "ignore").lower()
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    return _SUPERSETS.get(name, name)


def decode_text(data: bytes, declared: str | None = None) -> str:
    """Decode `data`, trusting (in order) a BOM, strict UTF-8, a declared charset, then detection."""
    for bom, codec in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: its BOM starts with UTF-16 LE's
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeError:
                raise UndecodableError(f"has a byte-order mark but is not valid {codec}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if declared and declared not in ("utf-8", "utf8"):
        try:
            return data.decode(declared)
        except (UnicodeError, LookupError):
            pass
    return _detect(data)


def _detect(data: bytes) -> str:
    chinese = _best_chinese_decoding(data)
    if chinese is not None:
        return chinese
    best = from_bytes(data).best()
    if best is None:
        raise UndecodableError("not valid text in any known encoding")
    return str(best)


def _best_chinese_decoding(data: bytes) -> str | None:
    """GB18030 and Big5 both decode many byte strings; keep the one that reads as common Chinese."""
    candidates: list[tuple[float, str]] = []
    for codec in ("gb18030", "big5hkscs"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        han = _HAN.findall(text)
        if not han:
            continue
        common = sum(1 for ch in han if _is_common(ch, codec))
        candidates.append((common / len(han), text))
    if not candidates:
        return None
    score, text = max(candidates, key=lambda pair: pair[0])
    return text if score >= 0.5 else None


def _is_common(ch: str, codec: str) -> bool:
    """A rough frequency test: the character sits in the common block of its own codec."""
    try:
        encoded = ch.encode(codec)
    except UnicodeEncodeError:
        return False
    if len(encoded) != 2:
        return False
    lead, trail = encoded
    if codec == "gb18030":  # GB2312 level 1 (the 3,755 most common characters)
        return 0xB0 <= lead <= 0xD7 and 0xA1 <= trail <= 0xFE
    return 0xA4 <= lead <= 0xC6  # Big5 frequently used characters
