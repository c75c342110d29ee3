"""A standard gRPC client (grpcio) calling the Micro greeter served on the gRPC transport.

Usage: grpc_client.py <host:port> <directory of greeter.proto>

Generates the Python stubs from greeter.proto with grpc_tools.protoc into a temporary
directory, waits (bounded) until the standard health service reports SERVING, then calls every
RPC kind over grpc.insecure_channel and checks the replies, metadata and an error status.
Prints "ok" and exits 0 when everything matches; any failure raises.
"""

import os
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

TIMEOUT = 10  # seconds, for every call


def stubs(proto_dir, out):
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            os.path.join(proto_dir, "greeter.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed with {rc}")
    sys.path.insert(0, out)
    import greeter_pb2
    import greeter_pb2_grpc

    return greeter_pb2, greeter_pb2_grpc


def wait_serving(channel):
    grpc.channel_ready_future(channel).result(timeout=30)
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    try:
        for update in watch:
            if update.status == health_pb2.HealthCheckResponse.SERVING:
                break
    finally:
        watch.cancel()
    for service in ["", "greeter.Greeter"]:
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status
        assert status == health_pb2.HealthCheckResponse.SERVING, (service, status)


def main():
    address, proto_dir = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as out:
        pb, pb_grpc = stubs(proto_dir, out)
        with grpc.insecure_channel(address) as channel:
            wait_serving(channel)
            stub = pb_grpc.GreeterStub(channel)

            reply, call = stub.Hello.with_call(
                pb.HelloRequest(name="Python"),
                metadata=[("trace-id", "py-1")],
                timeout=TIMEOUT,
            )
            assert reply.message == "Hello Python", reply
            assert ("trace-id", "py-1") in call.initial_metadata(), call.initial_metadata()

            replies = [r.message for r in stub.Stream(pb.StreamRequest(name="Py", count=3), timeout=TIMEOUT)]
            assert replies == ["Hello Py #1", "Hello Py #2", "Hello Py #3"], replies

            names = [pb.HelloRequest(name=n) for n in ["a", "b"]]
            chat = [r.message for r in stub.Chat(iter(names), timeout=TIMEOUT)]
            assert chat == ["Hello a", "Hello b"], chat
            collected = stub.Collect(iter(names), timeout=TIMEOUT)
            assert collected.message == "Hello a, b", collected

            try:
                stub.Hello(pb.HelloRequest(name=""), timeout=TIMEOUT)
                raise AssertionError("an empty name must fail")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
                assert e.details() == "name must not be empty", e.details()
    print("ok")


if __name__ == "__main__":
    main()
