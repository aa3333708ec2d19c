"""What a password must be: long enough, and not one of the first a guesser tries.

Pure rules, no I/O. Length is what makes a password hard to guess (NIST SP 800-63B: at
least 8, no composition rules); on top of that, a short list of the most common passwords
and their obvious variants, the account's own e-mail and name, and one character repeated
are refused (a "breach-sanity" check without sending anything anywhere).
"""

from __future__ import annotations

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024

# The most frequent passwords of public breach corpora (lower-cased, at least
# MIN_PASSWORD_CHARS long, or a common stem the length rule alone would let through
# with a suffix such as "password123").
_COMMON = frozenset(
    {
        "1234567890",
        "12345678910",
        "0123456789",
        "0987654321",
        "1111111111",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "qwertyuiop",
        "asdfghjkl;",
        "zxcvbnm123",
        "qwerty1234",
        "qwerty12345",
        "password",
        "passw0rd",
        "p@ssw0rd",
        "letmein",
        "iloveyou",
        "welcome",
        "admin",
        "administrator",
        "changeme",
        "football",
        "baseball",
        "sunshine",
        "princess",
        "dragon",
        "monkey",
        "master",
        "superman",
        "trustno1",
        "threadline",
        "qwerty",
        "abc123",
        "secret",
    }
)
_SUFFIX_DIGITS = "0123456789!@#$%^&*.?_-"


def _stem(password: str) -> str:
    """The password without trailing digits and punctuation, lower-cased."""
    return password.lower().rstrip(_SUFFIX_DIGITS)


def password_problem(
    password: str, *, email: str | None = None, name: str | None = None
) -> str | None:
    """Why `password` is refused, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"must have at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"must have at most {MAX_PASSWORD_CHARS} characters"
    lowered = password.lower()
    if len(set(lowered)) <= 2:
        return "is too easy to guess (one or two characters repeated)"
    if lowered in _COMMON or _stem(password) in _COMMON:
        return "is one of the most common passwords"
    for own in (email, email.split("@")[0] if email else None, name):
        if own and len(own) >= 4 and own.lower() in lowered:
            return "must not contain your e-mail or name"
    return None
