"""An independent MCP client (the `mcp` Python SDK) against micro-mcp.

    python3 client.py TARGET MODE LATE_TOOL

TARGET is the URL of a Streamable HTTP endpoint, or a program that serves MCP on its standard
input and output (started with this process's environment).

MODE is `legacy` (the `initialize` handshake, a session, list_changed sent unasked) or `auto`
(the SDK's default: `server/discover`, then the stateless 2026-07-28 protocol, list_changed on
a `subscriptions/listen` stream). The client lists the tools, calls the greeter's unary and
streaming endpoints and a failing call, then prints READY-FOR-CHANGE and waits for the tool
list to change (the test registers a service whose endpoint is LATE_TOOL). Prints OK at the
end; any failure raises, exiting non-zero.
"""

import os
import sys

import anyio
from mcp import Client, StdioServerParameters

WAIT = 20  # seconds, for any one step


def text_of(result):
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def check_calls(client):
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    hello = tools.get("greeter.Greeter.Hello")
    assert hello is not None, f"no greeter.Greeter.Hello among {sorted(tools)}"
    name = hello.input_schema["properties"]["name"]
    assert name["type"] == "string", hello.input_schema
    assert hello.output_schema["properties"]["message"]["type"] == "string", hello.output_schema
    # The RPC's proto comment, carried by micro-build into the registry, with its @example.
    assert hello.description.startswith("Replies with a greeting for the name in the request."), hello.description
    assert hello.input_schema["examples"] == [{"name": "John"}], hello.input_schema
    assert "greeter.Greeter.Stream" in tools, sorted(tools)

    result = await client.call_tool("greeter.Greeter.Hello", {"name": "Ann"})
    assert not result.is_error, text_of(result)
    assert result.structured_content == {"message": "Hello Ann"}, result
    assert "Hello Ann" in text_of(result), result

    result = await client.call_tool("greeter.Greeter.Hello", {"name": ""})
    assert result.is_error, result
    assert text_of(result).startswith("400 Bad Request: "), text_of(result)

    result = await client.call_tool("greeter.Greeter.Stream", {"name": "S", "count": 2})
    assert not result.is_error, text_of(result)
    replies = [reply["message"] for reply in result.structured_content["replies"]]
    assert replies == ["Hello S #1", "Hello S #2"], result.structured_content
    assert result.structured_content["truncated"] is False, result.structured_content

    try:
        await client.call_tool("nobody.Nothing.Here", {})
    except Exception:  # an unknown tool is a protocol error
        pass
    else:
        raise AssertionError("calling an unknown tool succeeded")


async def has_tool(client, name):
    tools = (await client.list_tools(cache_mode="refresh")).tools
    return any(tool.name == name for tool in tools)


def server_of(target):
    if target.startswith(("http://", "https://")):
        return target
    return StdioServerParameters(command=target, env=dict(os.environ))


async def legacy(target, late_tool):
    changed = anyio.Event()

    async def on_message(message):
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.set()

    async with Client(server_of(target), mode="legacy", message_handler=on_message, read_timeout_seconds=WAIT) as client:
        await check_calls(client)
        assert not await has_tool(client, late_tool)
        print("READY-FOR-CHANGE", flush=True)
        with anyio.fail_after(WAIT):
            await changed.wait()
        assert await has_tool(client, late_tool), f"no {late_tool} after the change"


async def modern(target, late_tool):
    async with Client(server_of(target), mode="auto", read_timeout_seconds=WAIT) as client:
        assert client.protocol_version == "2026-07-28", client.protocol_version
        await check_calls(client)
        assert not await has_tool(client, late_tool)
        async with client.listen(tools_list_changed=True) as subscription:
            print("READY-FOR-CHANGE", flush=True)
            with anyio.fail_after(WAIT):
                async for _event in subscription:
                    break
        assert await has_tool(client, late_tool), f"no {late_tool} after the change"


def main():
    target, mode, late_tool = sys.argv[1:4]
    run = {"legacy": legacy, "auto": modern}[mode]
    anyio.run(run, target, late_tool)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
