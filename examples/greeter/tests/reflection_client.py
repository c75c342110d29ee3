"""A standard gRPC tool's view of the Micro greeter: everything from server reflection.

Usage: reflection_client.py <host:port>

With nothing but the address (no .proto, no generated stubs), asks the server's reflection
service (grpc.reflection.v1alpha, through grpcio-reflection's descriptor database) which
services it has, describes greeter.Greeter, builds the request and reply classes from the
descriptors it returned, and calls Hello and Stream with them. Prints "ok" and exits 0 when
everything matches; any failure raises.
"""

import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT = 10  # seconds, for every call


def main():
    address = sys.argv[1]
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        for expected in ["greeter.Greeter", "grpc.health.v1.Health"]:
            assert expected in services, services

        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("greeter.Greeter")
        methods = {m.name: m for m in service.methods}
        assert sorted(methods) == ["Chat", "Collect", "Hello", "Stream"], sorted(methods)
        assert methods["Stream"].server_streaming and not methods["Stream"].client_streaming
        assert methods["Chat"].client_streaming and methods["Chat"].server_streaming

        def classes(method):
            return (
                message_factory.GetMessageClass(method.input_type),
                message_factory.GetMessageClass(method.output_type),
            )

        request, reply = classes(methods["Hello"])
        hello = channel.unary_unary(
            "/greeter.Greeter/Hello",
            request_serializer=request.SerializeToString,
            response_deserializer=reply.FromString,
        )
        answer = hello(request(name="Reflection"), timeout=TIMEOUT)
        assert answer.message == "Hello Reflection", answer

        request, reply = classes(methods["Stream"])
        stream = channel.unary_stream(
            "/greeter.Greeter/Stream",
            request_serializer=request.SerializeToString,
            response_deserializer=reply.FromString,
        )
        replies = [r.message for r in stream(request(name="R", count=2), timeout=TIMEOUT)]
        assert replies == ["Hello R #1", "Hello R #2"], replies
    print("ok")


if __name__ == "__main__":
    main()
