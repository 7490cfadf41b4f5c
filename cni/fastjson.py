"""JSON for the plugins' hot path, straight from CPython's C accelerator.

``import json`` pulls in ``re`` and ``enum`` (5-8 ms on every plugin exec) only
to compile regexes that the C scanner and encoder never use. A plugin parses
one document and prints one, so it calls ``_json`` directly. Errors are
``ValueError`` as with ``json``: on malformed input the document is handed to
the stdlib parser, whose import cost is then paid on the error path only (the
C scanner alone cannot always build its error without ``json.decoder``).
"""
import _json

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    def __init__(self, parse_constant):
        self.parse_constant = parse_constant


def loads(text, parse_constant=None):
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    scan = _json.make_scanner(_ScanContext(parse_constant or _CONSTANTS.__getitem__))
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        obj, end = scan(text, start)
    except (StopIteration, SystemError):
        return _stdlib_loads(text, parse_constant)
    if text[end:].strip(_WHITESPACE):
        return _stdlib_loads(text, parse_constant)
    return obj


def _stdlib_loads(text, parse_constant):
    import json
    return json.loads(text, parse_constant=parse_constant)


def _unserialisable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode = _json.make_encoder(None, _unserialisable, _json.encode_basestring_ascii, None,
                             ": ", ", ", False, False, True)


def dumps(obj) -> str:
    return "".join(_encode(obj, 0))
