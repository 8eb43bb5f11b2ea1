#!/usr/bin/env python3
"""Structured output end to end: `st-run --http` on the tiny synthetic model
(random weights), asked for response_format json_schema answers with several
seeds and temperatures, and for json_object; every answer must parse and
validate against its schema under the `jsonschema` package, finish with
"stop" (the format closed itself, even when max_tokens is tight), and come out
the same streamed and whole. Schemas the grammar cannot express, and
oversized or deeply nested ones, get a 400 that names the problem, and the
server goes on serving.

    http_structured.py BUILD_DIR     (exit 77: skipped, jsonschema missing)
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

try:
    import jsonschema
except ImportError:
    print("skip: python3-jsonschema is not installed")
    sys.exit(77)

BUILD = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
LOG = f"/tmp/st-http-structured-{os.getpid()}.log"  # the server's stderr, shown on a failure, then removed

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 130},
            "height": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 2.5},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "minItems": 1, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 10}, "zip": {"type": ["string", "null"]}},
                "required": ["city", "zip"],
                "additionalProperties": False,
            },
            "member": {"type": "boolean"},
            "nothing": {"type": "null"},
        },
        "required": ["name", "age", "height", "pets", "address", "member", "nothing"],
        "additionalProperties": False,
    },
    "optional": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 3}, "c": {"const": 42}},
        "required": ["c"],
    },
    "list": {"type": "array", "items": {"type": "number", "minimum": -1, "maximum": 1}, "maxItems": 5},
}


def start():
    # made (once, renamed into place: other tests read it at the same time) by the shared script
    model = subprocess.run([os.path.join(HERE, "..", "util", "tiny-model"), BUILD], check=True,
                           stdout=subprocess.PIPE, text=True).stdout.strip()
    with open(LOG, "w") as log:
        p = subprocess.Popen([os.path.join(BUILD, "st-run"), "-m", model, "--http", "127.0.0.1:0", "-t", "1"],
                             stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + 60
    line = ""
    while "serving on" not in line:
        line = p.stdout.readline()
        if not line and (p.poll() is not None or time.time() > deadline):
            p.kill()
            with open(LOG) as log:
                print("st-run --http did not start; its log:\n" + log.read()[-3000:])
            os.unlink(LOG)
            sys.exit(1)
    return p, line.split("serving on ")[1].strip().rstrip("/")


def post(url, body, path="/v1/chat/completions"):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def chat(url, schema, seed, temp, max_tokens, stream=False, fmt=None):
    body = {"messages": [{"role": "user", "content": f"Describe someone, please ({seed})"}], "seed": seed,
            "temperature": temp, "max_tokens": max_tokens, "stream": stream,
            "response_format": fmt or {"type": "json_schema", "json_schema": {"name": "x", "schema": schema,
                                                                              "strict": True}}}
    status, text = post(url, body)
    assert status == 200, f"status {status}: {text}"
    if not stream:
        c = json.loads(text)["choices"][0]
        return c["message"]["content"], c["finish_reason"], json.loads(text)["usage"]["completion_tokens"]
    out, finish = "", None
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            c = json.loads(line[6:])["choices"][0]
            out += c["delta"].get("content") or ""
            finish = c["finish_reason"] or finish
    return out, finish, None


def main():
    p, url = start()
    failures = 0
    checked = 0
    try:
        for name, schema in SCHEMAS.items():
            validator = jsonschema.Draft7Validator(schema)
            for seed in range(1, 7):
                temp = [0.0, 0.7, 1.5][seed % 3]
                # tight budgets force the closing early; loose ones let the model ramble
                max_tokens = [120, 400][seed % 2]
                text, finish, n = chat(url, schema, seed, temp, max_tokens)
                checked += 1
                try:
                    value = json.loads(text)
                    errors = [e.message for e in validator.iter_errors(value)]
                except ValueError as e:
                    errors = [f"not JSON: {e}"]
                if errors or finish != "stop":
                    failures += 1
                    print(f"FAIL {name} seed {seed} temp {temp}: finish {finish}, {errors[:1]}: {text!r}")
                else:
                    print(f"ok {name} seed {seed} temp {temp}: {n} tokens: {text[:100]!r}")
                if seed <= 2:  # streamed: the same text
                    s, sf, _ = chat(url, schema, seed, temp, max_tokens, stream=True)
                    if s != text or sf != finish:
                        failures += 1
                        print(f"FAIL {name} seed {seed}: streamed {s!r} ({sf}) differs from {text!r} ({finish})")
        for seed in range(1, 4):
            text, finish, _ = chat(url, None, seed, 1.0, 60, fmt={"type": "json_object"})
            value = json.loads(text)
            assert isinstance(value, dict) and finish == "stop", f"json_object: {text!r} {finish}"
            print(f"ok json_object seed {seed}: {text[:80]!r}")
        # /v1/completions takes response_format too
        for seed in range(1, 3):
            status, text = post(url, {"prompt": "A record:", "max_tokens": 80, "temperature": 1.5, "seed": seed,
                                      "response_format": {"type": "json_schema",
                                                          "json_schema": {"schema": SCHEMAS["optional"]}}},
                                path="/v1/completions")
            c = json.loads(text)["choices"][0]
            jsonschema.validate(json.loads(c["text"]), SCHEMAS["optional"])
            assert c["finish_reason"] == "stop", c
            print(f"ok completions seed {seed}: {c['text']!r}")
        # refused schemas name the keyword; the server goes on
        bad = [
            ({"type": "string", "pattern": "^a+$"}, "'pattern' is not supported"),
            ({"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}, "'format' is not supported (at /properties/d)"),
            ({"$ref": "#/$defs/a", "$defs": {"a": {}}}, "'$ref'"),
            ({"anyOf": [{"type": "object"}, {"type": "object", "properties": {"a": {}}}]}, "different JSON types"),
            ({"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "array", "items":
             {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "array", "items":
             {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "array", "items":
             {"type": "array", "items": {}}}}}}}}}}}}}}, "deeper than"),
            ({"enum": list(range(1000))}, "more than 512 values"),
            ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(80)}}, "more than 64 properties"),
        ]
        for schema, want in bad:
            body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 50,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
            status, text = post(url, body)
            msg = json.loads(text).get("error", {}).get("message", "")
            if status != 400 or want not in msg:
                failures += 1
                print(f"FAIL {json.dumps(schema)[:60]}: {status} {msg!r}, wanted 400 with {want!r}")
            else:
                print(f"ok 400: {msg}")
        for body, want in [({"response_format": {"type": "xml"}}, "not text, json_object or json_schema"),
                           ({"response_format": {"type": "json_schema"}}, "json_schema must be an object"),
                           ({"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMAS["person"]}},
                             "max_tokens": 20}, "shortest answer")]:
            body["messages"] = [{"role": "user", "content": "x"}]
            status, text = post(url, body)
            msg = json.loads(text).get("error", {}).get("message", "")
            if status != 400 or want not in msg:
                failures += 1
                print(f"FAIL {body}: {status} {msg!r}")
        text, finish, _ = chat(url, SCHEMAS["optional"], 9, 0.0, 80)
        jsonschema.validate(json.loads(text), SCHEMAS["optional"])
        assert p.poll() is None, "the server died"
    finally:
        p.terminate()
        p.wait(10)
        with open(LOG) as log:
            if failures or sys.exc_info()[0]:
                print("the server's log ends:\n" + log.read()[-3000:])
        os.unlink(LOG)
    print(f"{checked} schema answers checked, {failures} failures")
    sys.exit(1 if failures else 0)


main()
