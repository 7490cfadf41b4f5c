"""API errors as v1 Status objects, in the exact shape the real server sends."""
from __future__ import annotations

from krsim.apiserver.kinds import Resource


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found',
                    {"name": name, "group": res.group, "kind": res.plural} if res.group
                    else {"name": name, "kind": res.plural})


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists',
                    _details(res, name, res.plural))


def conflict(res: Resource, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    _details(res, name, res.plural))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f'the body of the request was in an unknown format - accepted media types '
                    f'include: application/json-patch+json, application/merge-patch+json, '
                    f'application/strategic-merge-patch+json (got "{content_type}")')


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource",
                    {})


class FieldError:
    """One cause of an Invalid error (field.ErrorList in Kubernetes)."""

    def __init__(self, kind: str, field: str, detail: str, value=None):
        self.kind, self.field, self.detail, self.value = kind, field, detail, value

    @property
    def reason(self) -> str:
        return {"Required": "FieldValueRequired", "Invalid": "FieldValueInvalid",
                "Duplicate": "FieldValueDuplicate", "Unsupported": "FieldValueNotSupported",
                "Forbidden": "FieldValueForbidden"}[self.kind]

    def text(self) -> str:
        if self.kind == "Required":
            return f"Required value: {self.detail}" if self.detail else "Required value"
        if self.kind == "Forbidden":
            return f"Forbidden: {self.detail}"
        shown = f'"{self.value}"' if isinstance(self.value, str) else str(self.value)
        head = {"Invalid": "Invalid value", "Duplicate": "Duplicate value",
                "Unsupported": "Unsupported value"}[self.kind]
        return f"{head}: {shown}: {self.detail}" if self.detail else f"{head}: {shown}"


def invalid(res: Resource, name: str, errors: list[FieldError]) -> ApiError:
    texts = [f"{e.field}: {e.text()}" for e in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    causes = [{"reason": e.reason, "message": e.text(), "field": e.field} for e in errors]
    details = {"name": name, "group": res.group, "kind": res.kind, "causes": causes}
    if not res.group:
        del details["group"]
    return ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {joined}', details)


def _details(res: Resource, name: str, kind: str) -> dict:
    details = {"name": name, "group": res.group, "kind": kind}
    if not res.group:
        del details["group"]
    return details
