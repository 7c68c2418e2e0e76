"""
Access to the recorded SocketCluster wire transcripts in C{tests/fixtures}.

A transcript is the JSON recording of one scenario between a real Node
SocketCluster server and client (see C{tests/fixtures/README.md}).  Tests
use L{load_transcript} to read one and L{frames} to walk the frames one
connection exchanged with the server, in order.
"""

import base64
import json
import os

__all__ = ["FIXTURES", "load_transcript", "transcript_names", "frames"]

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def load_transcript(name):
    """
    Load one transcript.

    @param name: its path under C{tests/fixtures}, with or without the
        C{.json} suffix, e.g. C{"v14/02-emit-ack"}.
    @return: the parsed transcript: a dict with C{scenario}, C{description},
        C{versions}, C{serverOptions} and C{events} (and C{port} or
        C{clientOptions}).
    @raise FileNotFoundError: there is no such transcript.
    """
    if not name.endswith(".json"):
        name += ".json"
    with open(os.path.join(FIXTURES, *name.split("/")), encoding="utf-8") as f:
        return json.load(f)


def transcript_names(folder):
    """
    List the transcripts of one folder.

    @param folder: C{"v14"}, C{"v20"} or C{"cross"}.
    @return: sorted names usable with L{load_transcript}, e.g.
        C{["v14/01-handshake-ping", ...]}.
    """
    return sorted(
        folder + "/" + entry[: -len(".json")]
        for entry in os.listdir(os.path.join(FIXTURES, folder))
        if entry.endswith(".json")
    )


def frames(transcript, conn="c0"):
    """
    The wire frames one connection exchanged with the server, in order.

    @param transcript: a dict from L{load_transcript}.
    @param conn: the connection label (C{"c0"}, C{"c1"}, ...).
    @return: a list of C{(direction, payload)} tuples.  For a data frame the
        direction is C{"in"} (client to server) or C{"out"} (server to
        client) and the payload is the text of a text frame (L{str}) or the
        bytes of a binary frame (L{bytes}, from C{frameBase64}).  For a
        close frame written or read by the server the direction is
        C{"close-out"} or C{"close-in"} and the payload is C{(code, reason)}.
        Client-side close frames and annotations are left out.
    """
    result = []
    for event in transcript["events"]:
        if event.get("conn") != conn or "dir" not in event:
            continue
        kind = event.get("type")
        if kind is None:
            if event.get("binary"):
                payload = base64.b64decode(event["frameBase64"])
            else:
                payload = event["frame"]
            result.append((event["dir"], payload))
        elif kind == "close-frame" and event.get("side") == "server":
            result.append(
                ("close-" + event["dir"], (event["code"], event["reason"]))
            )
    return result


def advance_until(testcase, clock, done, limit=50):
    """
    Advance C{clock} from one delayed call to the next until C{done()} is
    true; fail C{testcase} when nothing is left to happen on the clock.
    """
    for _ in range(limit):
        if done():
            return
        calls = clock.getDelayedCalls()
        if not calls:
            testcase.fail("Nothing left to happen on the clock")
        when = min(call.getTime() for call in calls)
        clock.advance(max(0, when - clock.seconds()))
