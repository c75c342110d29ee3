<?php
// Calls the greeter through Micro's API gateway from plain PHP (php-cli and php-curl, no
// composer): a unary call, a Micro error, a server stream over Server-Sent Events, and an
// event published on the broker. See README.md next to this file.
//
//   MICRO_GATEWAY_URL    the gateway (default http://127.0.0.1:8080)
//   MICRO_EXAMPLE_TOPIC  the topic to publish on (default greetings)
//
//   php examples/php/client.php [name]

declare(strict_types=1);

const CONNECT_TIMEOUT_SECONDS = 5;
// The gateway bounds every call and stream by its own timeout (10 s by default).
const TIMEOUT_SECONDS = 30;
// Events larger than this are refused instead of buffered without end.
const MAX_EVENT_BYTES = 1024 * 1024;

/** A Micro error as the gateway answers it: Go Micro's `{"id","code","detail","status"}`. */
final class MicroError extends RuntimeException
{
    public function __construct(
        public readonly string $id,
        int $code,
        public readonly string $detail,
        public readonly string $status,
    ) {
        parent::__construct("$id: $detail ($code $status)", $code);
    }

    /** Reads Go Micro's error JSON; anything else (a proxy's page) becomes a bare error. */
    public static function fromJson(string $json, int $httpStatus): self
    {
        $e = json_decode($json, true);
        if (!is_array($e) || !isset($e['code'])) {
            return new self('', $httpStatus, trim(substr($json, 0, 200)), '');
        }
        return new self(
            (string) ($e['id'] ?? ''),
            (int) $e['code'],
            (string) ($e['detail'] ?? ''),
            (string) ($e['status'] ?? ''),
        );
    }
}

/** A curl handle for POSTing `$body` as JSON to `$url`, with both timeouts set. */
function post_handle(string $url, mixed $body, string $accept): CurlHandle
{
    $ch = curl_init($url);
    curl_setopt_array($ch, [
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => json_encode($body, JSON_THROW_ON_ERROR),
        CURLOPT_HTTPHEADER => ['Content-Type: application/json', "Accept: $accept"],
        CURLOPT_CONNECTTIMEOUT => CONNECT_TIMEOUT_SECONDS,
        CURLOPT_TIMEOUT => TIMEOUT_SECONDS,
    ]);
    return $ch;
}

/** POSTs `$body` as JSON to `$url`; returns the HTTP status and the answer. */
function send(string $url, mixed $body): array
{
    $ch = post_handle($url, $body, 'application/json');
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    $answer = curl_exec($ch);
    if ($answer === false) {  // refused, timed out: no answer at all
        throw new RuntimeException("$url: " . curl_error($ch));
    }
    return [curl_getinfo($ch, CURLINFO_RESPONSE_CODE), $answer];
}

/** Calls `$service`'s `$endpoint` (`Type.Method`) with `$request`; returns the reply. */
function call(string $gateway, string $service, string $endpoint, array $request): array
{
    [$status, $answer] = send("$gateway/api/$service/$endpoint", $request);
    if ($status !== 200) {
        throw MicroError::fromJson($answer, $status);
    }
    return json_decode($answer, true, 512, JSON_THROW_ON_ERROR);
}

/** Splits Server-Sent Events out of a response as it arrives, in chunks that may end anywhere. */
final class EventStreamParser
{
    private string $pending = '';  // the bytes after the last newline
    private string $type = 'message';
    private array $data = [];
    private int $size = 0;  // the bytes of the current event's data

    /** The events that `$chunk` completes, as [type, data] pairs. */
    public function feed(string $chunk): array
    {
        $this->pending .= $chunk;
        if (strlen($this->pending) + $this->size > MAX_EVENT_BYTES) {
            throw new RuntimeException('an event is larger than ' . MAX_EVENT_BYTES . ' bytes');
        }
        $events = [];
        while (($end = strpos($this->pending, "\n")) !== false) {
            $line = rtrim(substr($this->pending, 0, $end), "\r");
            $this->pending = substr($this->pending, $end + 1);
            if ($line === '') {  // a blank line ends an event
                if ($this->data !== []) {
                    $events[] = [$this->type, implode("\n", $this->data)];
                }
                [$this->type, $this->data, $this->size] = ['message', [], 0];
                continue;
            }
            // `field: value`. Comments (`: keep-alive`), `id` and `retry` are not needed here.
            [$field, $value] = array_pad(explode(':', $line, 2), 2, '');
            $value = str_starts_with($value, ' ') ? substr($value, 1) : $value;
            if ($field === 'event') {
                $this->type = $value;
            } elseif ($field === 'data') {
                $this->data[] = $value;
                $this->size += strlen($value) + 1;
            }
        }
        return $events;
    }
}

/**
 * Calls a server-streaming endpoint and hands each reply to `$onReply` as it arrives. An
 * `error` event, or an error answer instead of the stream, is a MicroError.
 */
function stream(
    string $gateway,
    string $service,
    string $endpoint,
    array $request,
    callable $onReply,
): void {
    $ch = post_handle("$gateway/api/$service/$endpoint", $request, 'text/event-stream');
    $events = new EventStreamParser();
    $errorBody = '';
    $thrown = null;
    curl_setopt($ch, CURLOPT_WRITEFUNCTION, function (CurlHandle $ch, string $chunk) use (
        $events, &$errorBody, &$thrown, $onReply
    ): int {
        // An exception cannot cross curl: keep it, stop the transfer, throw it afterwards.
        try {
            if (curl_getinfo($ch, CURLINFO_RESPONSE_CODE) !== 200) {
                $errorBody .= $chunk;  // not a stream: Go Micro's error JSON
                if (strlen($errorBody) > MAX_EVENT_BYTES) {
                    throw new RuntimeException('the error answer is too large');
                }
                return strlen($chunk);
            }
            foreach ($events->feed($chunk) as [$type, $data]) {
                if ($type === 'error') {
                    throw MicroError::fromJson($data, 500);
                }
                $onReply(json_decode($data, true, 512, JSON_THROW_ON_ERROR));
            }
            return strlen($chunk);
        } catch (Throwable $e) {
            $thrown = $e;
            return 0;  // anything but strlen($chunk) makes curl abort the transfer
        }
    });
    $finished = curl_exec($ch);
    if ($thrown !== null) {
        throw $thrown;
    }
    if ($finished === false) {
        throw new RuntimeException("$gateway/api/$service/$endpoint: " . curl_error($ch));
    }
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    if ($status !== 200) {
        throw MicroError::fromJson($errorBody, $status);
    }
}

/** Publishes `$event` on `$topic` through the gateway's broker; the gateway answers 202. */
function publish(string $gateway, string $topic, array $event): void
{
    [$status, $answer] = send("$gateway/event/" . rawurlencode($topic), $event);
    if ($status !== 202) {
        throw MicroError::fromJson($answer, $status);
    }
}

$gateway = rtrim(getenv('MICRO_GATEWAY_URL') ?: 'http://127.0.0.1:8080', '/');
$topic = getenv('MICRO_EXAMPLE_TOPIC') ?: 'greetings';
$name = $argv[1] ?? 'John';

try {
    // a. A unary call.
    $reply = call($gateway, 'greeter', 'Greeter.Hello', ['name' => $name]);
    echo "Greeter.Hello: {$reply['message']}\n";

    // b. A Micro error: the greeter has no Greeter.Nope.
    try {
        call($gateway, 'greeter', 'Greeter.Nope', ['name' => $name]);
        throw new RuntimeException('Greeter.Nope answered, but it should not exist');
    } catch (MicroError $e) {
        echo "Greeter.Nope failed: code {$e->getCode()}, detail: {$e->detail}\n";
    }

    // c. A server stream, each reply printed as it arrives; then a stream that fails.
    $greetings = ['name' => $name, 'count' => 3];
    stream($gateway, 'greeter', 'Greeter.Stream', $greetings, function (array $reply) {
        echo "Greeter.Stream: {$reply['message']}\n";
    });
    try {
        stream($gateway, 'greeter', 'Greeter.Nope', ['name' => $name], function (array $reply) {
            throw new RuntimeException('Greeter.Nope streamed a reply, but it should not exist');
        });
        throw new RuntimeException('the Greeter.Nope stream ended without an error');
    } catch (MicroError $e) {
        echo "Greeter.Nope stream failed: code {$e->getCode()}, detail: {$e->detail}\n";
    }

    // d. An event on the broker: every subscriber of the topic gets it.
    publish($gateway, $topic, ['from' => 'php', 'message' => $reply['message']]);
    echo "published to $topic: 202 Accepted\n";
} catch (Throwable $e) {
    fwrite(STDERR, "client.php against $gateway failed: {$e->getMessage()}\n");
    exit(1);
}
