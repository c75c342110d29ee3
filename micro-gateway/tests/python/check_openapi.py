"""Checks the gateway's OpenAPI document with independent validators.

Usage: check_openapi.py DOC.json PATH REQUEST.json REPLY.json

The document must be valid OpenAPI 3.1 (openapi-spec-validator); REQUEST and REPLY, a real
exchange with the endpoint at PATH, must match its request and 200 response schemas, and a
request with a wrongly typed field must not.
"""

import json
import sys

from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate


def main():
    doc_path, path, request_path, reply_path = sys.argv[1:5]
    with open(doc_path) as f:
        doc = json.load(f)
    validate(doc)
    operation = doc["paths"][path]["post"]
    request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    reply_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    with open(request_path) as f:
        request = json.load(f)
    with open(reply_path) as f:
        reply = json.load(f)
    OAS31Validator(request_schema).validate(request)
    OAS31Validator(reply_schema).validate(reply)
    wrong = {key: 12345 for key in request}
    if OAS31Validator(request_schema).is_valid(wrong):
        sys.exit(f"the request schema accepts a wrongly typed request: {wrong}")
    print("ok")


if __name__ == "__main__":
    main()
