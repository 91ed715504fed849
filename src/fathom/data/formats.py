"""The file formats the corpus reader takes, by suffix, and the fix for the document formats it does not."""

from __future__ import annotations

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
JSON_SUFFIXES = {".jsonl", ".json"}
PARQUET_SUFFIXES = {".parquet"}
WORD_SUFFIXES = {".docx"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | JSON_SUFFIXES | PARQUET_SUFFIXES | WORD_SUFFIXES
# document formats a corpus folder often holds that fathom does not read, with the way to make them readable;
# a folder's files of these types are named in the skips (images, archives, files without a suffix are not)
CONVERT_HINTS = {
    ".doc": "save it as .docx or PDF",
    ".odt": "save it as .docx or PDF",
    ".rtf": "save it as .docx or PDF",
    ".ppt": "export it as PDF",
    ".pptx": "export it as PDF",
    ".xls": "export its sheets as text, as .txt or .jsonl",
    ".xlsx": "export its sheets as text, as .txt or .jsonl",
    ".csv": "rename it .txt, or write its rows as .jsonl",
    ".tif": "a scan: put its pages in a PDF, which data.ocr: auto reads",
    ".tiff": "a scan: put its pages in a PDF, which data.ocr: auto reads",
}


def unsupported_reason(suffix: str) -> str:
    """Why a file is not read, with what would make it readable."""
    fix = CONVERT_HINTS.get(suffix, f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
    return f"unsupported file type '{suffix or '(none)'}' ({fix})"
