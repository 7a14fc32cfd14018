"""No credentials in tracked files: AWS keys, tokens, private keys, credential files.

Scans `git ls-files` (what a push would publish), text files up to 2 MB. The well-known fake
keys of the AWS documentation are allowed (tests and docs may show them); anything else that
looks like a key fails with file:line. The scanner is tested on planted keys built at run time,
so this file itself contains none.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 2_000_000

PATTERNS: dict[str, re.Pattern[str]] = {
    "AWS access key id": re.compile(
        r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA)[A-Z2-7]{16}(?![A-Z0-9])"
    ),
    "AWS secret access key": re.compile(
        r"(?i)aws.{0,20}(?:secret|private).{0,20}[=:]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
    ),
    "private key block": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "bearer token literal": re.compile(
        r"(?i)authorization[\"']?\s*[:=]\s*[\"']?bearer\s+[A-Za-z0-9._\-]{30,}"
    ),
}
# The AWS documentation's example credentials: fakes by definition (split so that no scanner,
# this one included, sees a key-shaped literal in this file).
_DOC_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
ALLOWED = {_DOC_KEY_ID, "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"}
SUSPICIOUS_NAMES = re.compile(
    r"(^|/)(id_rsa|id_ed25519|\.env|credentials|.*\.pem|.*\.p12|.*\.key)$"
)


def find_credentials(text: str) -> list[tuple[int, str]]:
    """(line number, what) for every credential-looking string in a text."""
    hits = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for what, pattern in PATTERNS.items():
            for m in pattern.finditer(line):
                found = m.group(m.lastindex or 0)
                if found not in ALLOWED and not any(a in line for a in ALLOWED):
                    hits.append((lineno, what))
    return hits


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [f for f in out.split("\0") if f]


def test_tracked_files_hold_no_credentials() -> None:
    files = _tracked_files()
    assert len(files) > 20, "git ls-files found almost nothing: is this a checkout?"
    problems = []
    for name in files:
        if SUSPICIOUS_NAMES.search(name):
            problems.append(f"{name}: a credential file name is tracked")
        path = REPO / name
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        text = data.decode("utf-8", errors="replace")
        problems += [f"{name}:{line}: {what}" for line, what in find_credentials(text)]
    assert not problems, "credentials in tracked files:\n" + "\n".join(problems)


# Planted secrets, assembled at run time so that no literal key sits in this file.
_AKID = "AKIA" + "Q3EGRXJZ" + "5TN7WB4K"
_SECRET = "kq8Xr2" + "Vn0pLz7/Ws4Yt" + "1Hc9Mb3Jf6Gd5Sa" + "8Ue2Iw"
_PEM = "-----BEGIN " + "RSA PRIVATE KEY-----"
_GHP = "ghp_" + "a1B2c3D4e5F6g7H8i9J0" + "k1L2m3N4o5P6q7R8"


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (f"aws_access_key_id = {_AKID}", "AWS access key id"),
        (f'AWS_SECRET_ACCESS_KEY: "{_SECRET}"', "AWS secret access key"),
        (f"{_PEM}\nMIIEow...", "private key block"),
        (f"token: {_GHP}", "GitHub token"),
    ],
)
def test_scanner_catches_planted_credentials(text: str, what: str) -> None:
    assert (1, what) in find_credentials(text)


def test_scanner_allows_documented_fakes_and_lookalikes() -> None:
    assert find_credentials("aws_access_key_id = " + _DOC_KEY_ID) == []
    assert find_credentials("arn:aws:iam::111122223333:role/vcube-worker") == []
    assert find_credentials("sha256:" + "a" * 64) == []
