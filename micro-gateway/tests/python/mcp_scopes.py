"""The MCP gateway's per-tool scopes, seen by an independent client (the `mcp` Python SDK).

    python3 mcp_scopes.py URL ALLOWED_TOKEN REFUSED_TOKEN

Connects to the gateway's Streamable HTTP endpoint at URL twice, each time with a bearer
token: the greeter's Hello tool must say which scope it needs, answer the first token with
its greeting and refuse the second with a 403 tool error. Prints OK at the end; any failure
raises, exiting non-zero.
"""

import sys

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

WAIT = 20  # seconds, for any one step
TOOL = "greeter.Greeter.Hello"


def text_of(result):
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def hello_with(url, token):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, read_timeout_seconds=WAIT) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert TOOL in tools, sorted(tools)
            return tools[TOOL], await client.call_tool(TOOL, {"name": "Ann"})


async def run(url, allowed, refused):
    tool, result = await hello_with(url, allowed)
    assert "Needs a token with the scope greet." in tool.description, tool.description
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"message": "Hello Ann"}, result

    _, result = await hello_with(url, refused)
    assert result.is_error, result
    text = text_of(result)
    assert text.startswith(f"403 Forbidden: {TOOL} needs"), text
    assert "greet" in text, text


def main():
    url, allowed, refused = sys.argv[1:4]
    anyio.run(run, url, allowed, refused)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
