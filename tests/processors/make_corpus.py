"""Regenerate the redaction corpus: `python tests/processors/make_corpus.py` writes corpus_positive.jsonl and
corpus_negative.jsonl next to this file (deterministic; review the diff when detectors change).

Positives are realistic secrets and PII in the formats they appear in (several per detector, bare, inside sentences,
headers, URLs, JSON bodies, connection strings); `secret` is the part that must not survive. Negatives are benign
look-alikes: ids, UUIDs, hashes, versions, timestamps, Luhn-failing numbers, bad-checksum IBANs, words like
"token" or "bearer" without a credential, URLs without passwords.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
from pathlib import Path

HERE = Path(__file__).parent
rng = random.Random(20260126)

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits


def pick(alphabet: str, count: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(count))


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        candidate = body + check
        total = 0
        for index, char in enumerate(reversed(candidate)):
            value = int(char)
            if index % 2:
                value *= 2
                if value > 9:
                    value -= 9
            total += value
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def luhn_broken(prefix: str, length: int) -> str:
    valid = luhn_complete(prefix, length)
    return valid[:-1] + str((int(valid[-1]) + rng.randrange(1, 10)) % 10)


def iban(country: str, length: int) -> str:
    bban = pick(string.digits, length - 4)
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt() -> str:
    header = b64url(json.dumps({"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}).encode())
    claims = {"sub": str(rng.randrange(10**6)), "iat": 1700000000 + rng.randrange(10**7), "scope": "read write"}
    return f"{header}.{b64url(json.dumps(claims).encode())}.{b64url(rng.randbytes(32))}"


def grouped(number: str, sizes: list[int], sep: str) -> str:
    parts, position = [], 0
    for size in sizes:
        parts.append(number[position : position + size])
        position += size
    return sep.join(parts)


PEM_TYPES = ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"]


def pem(kind: str) -> str:
    body = base64.b64encode(rng.randbytes(120)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----"


def positives() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(kind: str, value: str, secret: str | None = None, config: str = "default") -> None:
        out.append({"kind": kind, "value": value, "secret": secret or value, "config": config})

    for index in range(14):
        token = jwt()
        forms = [token, f"Authorization: Bearer {token}", f"session cookie id_token={token}", f'{{"jwt":"{token}"}}']
        add("jwt", forms[index % 4], token)
    for index in range(12):
        token = pick(ALNUM + "-._~", rng.randrange(24, 48))
        token = token[:10] + str(rng.randrange(10)) + token[11:]
        forms = [f"Bearer {token}", f"Authorization: Bearer {token}", f"curl -H 'Authorization: bearer {token}'"]
        add("bearer", forms[index % 3], token)
    for index in range(10):
        user, password = pick(string.ascii_lowercase, 6), pick(ALNUM + "!#%", 12)
        creds = base64.b64encode(f"{user}:{password}".encode()).decode()
        add("basic", [f"Basic {creds}", f"Authorization: Basic {creds}"][index % 2], creds)
    for index in range(12):
        key = rng.choice(["AKIA", "ASIA", "AROA", "AIDA"]) + pick(UPPER_DIGITS, 16)
        forms = [key, f"using access key {key} in us-east-1", f"aws_access_key_id={key}", f"[{key}]"]
        add("aws", forms[index % 4], key)
    for index in range(5):
        secret = pick(ALNUM + "/+", 40)
        add("aws", f"aws_secret_access_key = {secret}", secret)
    for index in range(10):
        key = "AIza" + pick(ALNUM + "-_", 35)
        add("gcp", [key, f"https://maps.googleapis.com/maps/api/geocode/json?address=x&key={key}"][index % 2], key)
    for _ in range(4):
        token = "ya29." + pick(ALNUM + "-_", 60)
        add("gcp", f"oauth access token {token}", token)
    for index in range(12):
        token = rng.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + pick(ALNUM, 36)
        add("github", [token, f"git clone https://{token}@github.com/acme/app.git", f"GITHUB_TOKEN={token}"][index % 3], token)
    for _ in range(4):
        token = "github_pat_" + pick(ALNUM, 22) + "_" + pick(ALNUM, 59)
        add("github", f"token {token} expired", token)
    for index in range(10):
        token = f"xox{rng.choice('bpars')}-{pick(string.digits, 12)}-{pick(string.digits, 13)}-{pick(ALNUM, 24)}"
        add("slack", [token, f"slack bot token: {token}"][index % 2], token)
    for _ in range(4):
        hook = f"hooks.slack.com/services/T{pick(UPPER_DIGITS, 8)}/B{pick(UPPER_DIGITS, 8)}/{pick(ALNUM, 24)}"
        add("slack", f"posting to https://{hook}", hook.split("/services/")[1])
    for index in range(12):
        key = rng.choice(["sk_live_", "sk_test_", "rk_live_", "rk_test_"]) + pick(ALNUM, 24)
        add("stripe", [key, f"stripe.api_key = '{key}'", f"charge failed with key {key}"][index % 3], key)
    for _ in range(4):
        secret = "whsec_" + pick(ALNUM, 32)
        add("stripe", f"webhook secret {secret}", secret)
    for index, kind in enumerate(PEM_TYPES * 2):
        key = pem(kind)
        add("pem", key if index % 2 == 0 else f"config: {json.dumps(key)}", key.splitlines()[1])
    card_specs = [("4", 16, [4, 4, 4, 4]), ("4", 13, [4, 4, 5]), ("51", 16, [4, 4, 4, 4]), ("55", 16, [4, 4, 4, 4]),
                  ("2221", 16, [4, 4, 4, 4]), ("34", 15, [4, 6, 5]), ("37", 15, [4, 6, 5]), ("6011", 16, [4, 4, 4, 4]),
                  ("65", 16, [4, 4, 4, 4]), ("3530", 16, [4, 4, 4, 4]), ("36", 14, [4, 6, 4]), ("62", 16, [4, 4, 4, 4])]
    for index in range(26):
        prefix, length, sizes = card_specs[index % len(card_specs)]
        number = luhn_complete(prefix, length)
        form = [number, grouped(number, sizes, " "), grouped(number, sizes, "-"), f"paid with card {grouped(number, sizes, ' ')} exp 12/29"][index % 4]
        secret = form if index % 4 < 3 else grouped(number, sizes, " ")
        add("card", form, secret)
    for index in range(12):
        area = rng.choice([n for n in range(1, 900) if n != 666])
        ssn = f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"
        add("ssn", [ssn, f"SSN on file: {ssn}", f"applicant ssn {ssn} verified"][index % 3], ssn)
    countries = [("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24), ("IT", 27), ("CH", 21), ("BE", 16)]
    for index in range(16):
        country, length = countries[index % len(countries)]
        number = iban(country, length)
        if country == "GB":
            number = number[:4] + pick(string.ascii_uppercase, 4) + number[8:]
            numeric = "".join(str(int(c, 36)) for c in number[4:] + number[:2] + "00")
            number = f"{number[:2]}{98 - int(numeric) % 97:02d}{number[4:]}"
        spaced = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
        add("iban", [number, spaced, f"refund to IBAN {spaced} today", f"iban={number}"][index % 4], [number, spaced, spaced, number][index % 4])
    for index in range(15):
        user, password = pick(string.ascii_lowercase, 5), pick(ALNUM + "!$%^*", rng.randrange(8, 20))
        scheme = rng.choice(["postgres", "mysql", "redis", "https", "amqp", "mongodb+srv", "ftp"])
        url = f"{scheme}://{user}:{password}@db{index}.internal.example.com:5432/app"
        add("url_password", [url, f"connecting to {url} failed: timeout"][index % 2], password)
    params = ["token", "access_token", "api_key", "apikey", "password", "secret", "client_secret", "auth", "refresh_token"]
    for index in range(14):
        value = pick(ALNUM, rng.randrange(12, 32))
        param = params[index % len(params)]
        add("query_secret", f"https://api.example.com/v1/items?page=2&{param}={value}&sort=asc", value)
    texts = [
        ("password={v}", "login failed for user bob: password={v}"),
        ("json", '{{"username": "bob", "password": "{v}"}}'),
        ("yaml", "db_password: {v}"),
        ("env", "export DATABASE_PASSWORD={v}"),
        ("header", "X-Api-Key: {v}"),
        ("kv", "retrying with client_secret={v} after 401"),
        ("json2", '{{"apiKey":"{v}","region":"eu"}}'),
        ("cookie", "Cookie: sessionid={v}"),
        ("set-cookie", "Set-Cookie: auth_token={v}; Path=/; HttpOnly"),
        ("private", "private_key={v}"),
    ]
    for index in range(20):
        value = pick(ALNUM + "!@#%", rng.randrange(8, 24)).replace("@", "x")
        template = texts[index % len(texts)][1]
        add("key_value", template.format(v=value), value)
    domains = ["example.com", "mail.example.org", "acme.co.uk", "uni.example.edu"]
    for index in range(10):
        email = f"{pick(string.ascii_lowercase, 6)}.{pick(string.ascii_lowercase, 5)}@{domains[index % 4]}"
        add("email", [email, f"invite sent to {email}", f"<{email}>"][index % 3], email, config="pii")
    for index in range(10):
        forms = [f"+1 415 555 {rng.randrange(1000, 9999)}", f"(212) 555-{rng.randrange(1000, 9999)}",
                 f"+44 20 7946 {rng.randrange(1000, 9999)}", f"call me at 415-555-{rng.randrange(1000, 9999)}",
                 f"+49 30 {rng.randrange(100000, 999999)}{rng.randrange(10, 99)}"]
        phone = forms[index % len(forms)]
        secret = phone.split("at ")[-1]
        add("phone", phone, secret, config="pii")
    return out


def negatives() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []

    def add(kind: str, value: str) -> None:
        out.append({"kind": kind, "value": value})

    for _ in range(15):
        add("uuid", str(uuid.UUID(bytes=rng.randbytes(16), version=4)))
    for _ in range(5):
        add("uuid", str(uuid.UUID(bytes=rng.randbytes(16), version=4)).upper())
    for _ in range(15):
        add("order_id", rng.choice(["ORD", "INV", "PO", "TCK"]) + f"-{rng.randrange(2019, 2027)}-{rng.randrange(10**6):06d}")
    for _ in range(10):
        add("order_id", f"order #{rng.randrange(10**9, 10**10)}")
    for _ in range(15):
        add("version", rng.choice(["", "v"]) + f"{rng.randrange(10)}.{rng.randrange(30)}.{rng.randrange(100)}" + rng.choice(["", "-rc.1", "-beta.2", "+build.5"]))
    for _ in range(10):
        add("sha1", hashlib.sha1(rng.randbytes(8)).hexdigest())
    for _ in range(10):
        add("sha256", rng.choice(["", "sha256:"]) + hashlib.sha256(rng.randbytes(8)).hexdigest())
    for _ in range(6):
        add("md5", hashlib.md5(rng.randbytes(8)).hexdigest().upper())
    for _ in range(15):
        prefix, length = rng.choice([("4", 16), ("51", 16), ("34", 15), ("6011", 16)])
        add("luhn_fail", luhn_broken(prefix, length))
    for _ in range(5):
        add("luhn_fail", grouped(luhn_broken("4", 16), [4, 4, 4, 4], " "))
    for _ in range(8):
        add("tracking", f"1Z{pick(UPPER_DIGITS, 16)}".replace("AKIA", "AKIB"))
    for _ in range(10):
        add("timestamp", f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(10**6):06d}+00:00")
    for _ in range(5):
        add("epoch", str(1700000000000 + rng.randrange(10**11)))
    for _ in range(10):
        add("ip", f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}")
    for _ in range(4):
        add("ipv6", f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}")
    for _ in range(10):
        add("url", f"https://app.example.com/projects/{rng.randrange(10**5)}/files?page={rng.randrange(9)}&sort=name&order=asc")
    for _ in range(4):
        add("url", f"https://user@example.com/profile/{rng.randrange(10**4)}")
    for _ in range(10):
        add("iban_bad", iban("DE", 22)[:2] + f"{(int(iban('DE', 22)[2:4]) + 1) % 100:02d}" + pick(string.digits, 18))
    for _ in range(6):
        add("ssn_invalid", rng.choice(["000", "666", "912"]) + f"-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}")
    for _ in range(4):
        add("ssn_invalid", f"{rng.randrange(100, 899)}-00-{rng.randrange(1000, 9999)}")
    sentences = [
        "password reset requested", "token bucket refilled", "the bearer of this note", "basic plan upgraded to pro",
        "secret santa assignments published", "api key rotation scheduled", "authorization granted by admin",
        "cookie banner accepted", "credit card added to wallet", "private key stored in HSM", "Bearer authentication required",
        "Basic information about the account", "user changed their password", "token expired, please sign in again",
        "ssn verification pending", "AKIA prefix documented", "sk_live keys are rotated monthly", "see eyJ header docs",
        "ghp tokens are deprecated", "xoxb scopes updated", "BEGIN transaction", "key=value pairs are accepted",
        "mode=fast retries=3", "region: eu-west-1", "status: ok", "time: 12:30:45", "ratio 16:9",
        "https://example.com:8443/health", "ftp://mirror.example.org/pub/", "mailto links disabled",
        "contact support via the portal", "visit https://docs.example.com/auth#tokens",
    ]
    for sentence in sentences:
        add("sentence", sentence)
    for _ in range(10):
        add("k8s", f"api-{pick(string.ascii_lowercase + string.digits, 10)}-{pick(string.ascii_lowercase + string.digits, 5)}")
    for _ in range(8):
        add("sku", f"SKU-{rng.randrange(10**5)}-{rng.choice(['XS', 'S', 'M', 'L', 'XL'])}")
    for _ in range(8):
        add("path", f"/var/log/app/{pick(string.ascii_lowercase, 6)}.log")
    for _ in range(8):
        add("number", str(rng.randrange(10**5, 10**8)))
    for _ in range(6):
        add("money", f"EUR {rng.randrange(10**6)}.{rng.randrange(100):02d}")
    for _ in range(6):
        add("base64_short", base64.b64encode(rng.randbytes(6)).decode())
    for _ in range(6):
        add("ulid", pick("0123456789ABCDEFGHJKMNPQRSTVWXYZ", 26))
    for _ in range(4):
        add("jwt_partial", "eyJhbGciOiJIUzI1NiJ9")
    return out


def main() -> None:
    for name, rows in (("corpus_positive.jsonl", positives()), ("corpus_negative.jsonl", negatives())):
        with open(HERE / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        print(f"{name}: {len(rows)} entries")


if __name__ == "__main__":
    main()
