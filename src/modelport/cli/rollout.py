"""``modelport rollout …``: roll out on a running server through its admin API.

``status``, ``alias``, ``rollback``, ``traffic``, ``canary-step``, ``load``, ``unload``: each
command is one or two HTTP calls to ``URL/admin/…`` plus formatting. The server's admin key,
``--admin-key`` (or ``MODELPORT_ADMIN_KEY``), is sent as ``Authorization: Bearer KEY``. An
answer of 4xx/5xx becomes the matching :mod:`modelport.errors` error, which
``modelport.cli.main`` prints as one line.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelport.errors import (
    ConfigError,
    Conflict,
    InvalidInput,
    ModelLoadError,
    ModelportError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    Unauthorized,
)
from modelport.traffic import TrafficPolicy

__all__ = ["ACTOR_HEADER", "AdminClient", "register"]

ACTOR_HEADER = "x-modelport-actor"
"""Who moves an alias; the same header as ``modelport.server.admin.ACTOR_HEADER``."""

Url = Annotated[str, typer.Argument(help="The running server, e.g. http://127.0.0.1:8000",
                                    show_default=False)]
Name = Annotated[str, typer.Argument(help="Model name, e.g. heart", show_default=False)]
ApiKey = Annotated[str | None, typer.Option(
    "--admin-key", "--api-key", envvar="MODELPORT_ADMIN_KEY", show_default=False,
    help="The server's admin key, sent as Authorization: Bearer KEY "
         "[env: MODELPORT_ADMIN_KEY]")]
Timeout = Annotated[float, typer.Option(
    "--timeout", help="Seconds to wait for the server (a move loads and checks a model)")]
Reason = Annotated[str | None, typer.Option("--reason", help="Recorded with the move",
                                            show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer")]

_out = Console(highlight=False, soft_wrap=True)
_ERRORS: dict[int, type[ModelportError]] = {
    401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict, 413: PayloadTooLarge,
    422: InvalidInput, 503: NotReady}


class AdminClient:
    """The admin API of one server: JSON in, JSON out, HTTP errors as modelport errors."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 60.0,
                 actor: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        if actor:
            self.headers[ACTOR_HEADER] = actor

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """``METHOD URL/admin/PATH`` with an optional JSON body; the JSON answer (or None)."""
        import httpx

        try:
            answer = httpx.request(method, f"{self.url}/admin/{path}", json=body,
                                   headers=self.headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach {self.url} ({type(exc).__name__}: {exc}); is the "
                              "server running, and is the URL right?") from None
        if answer.status_code >= 400:
            raise _error(answer.status_code, answer.text)
        return answer.json() if answer.content else None

    def models(self) -> dict[str, Any]:
        """``GET /admin/models``: every served model, its versions, policy and follow status."""
        data: dict[str, Any] = self.call("GET", "models")
        return data

    def model(self, name: str) -> dict[str, Any]:
        """One served model's entry of :meth:`models`; NotFound names the served ones."""
        models = self.models()
        if name not in models:
            raise NotFound(f"{self.url} does not serve a model named '{name}' (it serves: "
                           f"{', '.join(sorted(models)) or 'none'})")
        entry: dict[str, Any] = models[name]
        return entry


def register(app: typer.Typer) -> None:
    """Add the ``rollout`` command group to the ``modelport`` app."""
    group = typer.Typer(help="Roll out on a running server: status, alias moves, rollback, "
                             "traffic policies (A/B, canary, shadow, sticky).",
                        no_args_is_help=True)
    for command in (status, alias, rollback, traffic, canary_step, load, unload):
        group.command(command.__name__.replace("_", "-"))(command)
    app.add_typer(group, name="rollout")


def status(
    url: Url,
    model: Annotated[str | None, typer.Option("--model", help="Only this model",
                                              show_default=False)] = None,
    api_key: ApiKey = None, timeout: Timeout = 30.0, as_json: Json = False,
) -> None:
    """What the server serves: versions, the default one, traffic policy, alias following,
    and the last version refused (an alias move, load or traffic change that failed its golden
    rows)."""
    client = AdminClient(url, api_key=api_key, timeout=timeout)
    models = {model: client.model(model)} if model else client.models()
    if as_json:
        _print_json(models)
        return
    table = Table("model", "serving", "versions", "traffic", "follows", "last failure")
    for name, entry in sorted(models.items()):
        follow = entry.get("follow")
        table.add_row(name, entry.get("default") or "-", ", ".join(entry.get("versions", [])),
                      describe_policy(entry.get("traffic")), _describe_follow(follow),
                      _describe_failure(follow))
    _out.print(table)
    for entry in (models[name] for name in sorted(models)):
        if entry.get("refused"):
            _out.print(_describe_refusal(entry["refused"]))


def alias(url: Url, name: Name,
          alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. production")],
          version: Annotated[str, typer.Argument(help="Target version, e.g. 1.2.0")], *,
          reason: Reason = None, api_key: ApiKey = None, timeout: Timeout = 120.0) -> None:
    """Point NAME@ALIAS at VERSION; the server switches before it answers."""
    client = AdminClient(url, api_key=api_key, timeout=timeout, actor=_login())
    body = {"version": version} | ({"reason": reason} if reason is not None else {})
    _report_move(client, client.call("PUT", f"models/{name}/aliases/{alias_name}", body))


def rollback(url: Url, name: Name,
             alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. production")],
             *, reason: Reason = None, api_key: ApiKey = None,
             timeout: Timeout = 120.0) -> None:
    """Move NAME@ALIAS back to its previous target; the server switches before it answers."""
    client = AdminClient(url, api_key=api_key, timeout=timeout, actor=_login())
    body = {"reason": reason} if reason is not None else None
    _report_move(client, client.call("POST", f"models/{name}/aliases/{alias_name}/rollback",
                                     body))


def traffic(
    url: Url, name: Name, *,
    weights: Annotated[str | None, typer.Option(
        "--weights", help="A/B split, e.g. 1.0.0=90,1.1.0=10", show_default=False)] = None,
    canary: Annotated[str | None, typer.Option(
        "--canary", help="Candidate version; the rest goes to the serving version",
        show_default=False)] = None,
    percent: Annotated[float | None, typer.Option(
        "--percent", help="The canary's share, 0 to 100", show_default=False)] = None,
    shadow: Annotated[str | None, typer.Option(
        "--shadow", help="Mirror every request to this version; clients get the serving "
                         "version's answer", show_default=False)] = None,
    sticky_header: Annotated[str | None, typer.Option(
        "--sticky-header", help="Keep each value of this header (e.g. X-User) on one version; "
                                "alone, adds it to the current policy", show_default=False)] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the policy")] = False,
    api_key: ApiKey = None, timeout: Timeout = 30.0,
) -> None:
    """Show or set the traffic policy of NAME (versions must be loaded on the server)."""
    client = AdminClient(url, api_key=api_key, timeout=timeout)
    chosen = [flag for flag, given in (("--weights", weights), ("--canary", canary),
                                      ("--shadow", shadow), ("--clear", clear)) if given]
    if len(chosen) > 1:
        raise InvalidInput(f"give one of {', '.join(chosen)}", field=chosen[1])
    if percent is not None and canary is None:
        raise InvalidInput("--percent goes with --canary VERSION", field="--percent")
    if clear:
        client.call("DELETE", f"models/{name}/traffic")
        _out.print(f"{name}: traffic policy removed; every request goes to the serving version")
        return
    if not chosen and sticky_header is None:
        _out.print(f"{name}: {describe_policy(_policy(client, name))}")
        return
    policy = _build_policy(client, name, weights=weights, canary=canary, percent=percent,
                           shadow=shadow, sticky_header=sticky_header)
    answer = client.call("PUT", f"models/{name}/traffic", policy.model_dump(mode="json"))
    _out.print(f"{name}: {describe_policy(answer['policy'])}")


def canary_step(url: Url, name: Name, *,
                to: Annotated[float | None, typer.Option(
                    "--to", help="The canary's new share in percent", show_default=False)] = None,
                by: Annotated[float | None, typer.Option(
                    "--by", help="Add this many percentage points", show_default=False)] = None,
                api_key: ApiKey = None, timeout: Timeout = 30.0) -> None:
    """Step the canary's share of NAME's traffic (to a percentage, or by some points)."""
    if (to is None) == (by is None):
        raise InvalidInput("give exactly one of --to PERCENT or --by POINTS", field="--to")
    client = AdminClient(url, api_key=api_key, timeout=timeout)
    data = _policy(client, name)
    if data is None:
        raise InvalidInput(f"{name} has no traffic policy; start a canary with: modelport "
                           f"rollout traffic URL {name} --canary VERSION --percent 5",
                           field="policy")
    policy = TrafficPolicy.parse(data)
    before = policy.canary_percent
    if before is None:
        raise InvalidInput(f"{name}'s policy has no canary arm ({describe_policy(data)}); "
                           "start one with --canary VERSION --percent P", field="policy")
    stepped = policy.with_canary_percent(min(100.0, before + by) if by is not None else
                                         float(to or 0.0))
    client.call("PUT", f"models/{name}/traffic", stepped.model_dump(mode="json"))
    candidate = next(a.version for a in stepped.arms if a.name == "canary")
    _out.print(f"{name}: canary {candidate} {_pct(before)} → {_pct(stepped.canary_percent)}")


def load(url: Url, name: Name,
         version: Annotated[str, typer.Argument(help="e.g. 1.1.0", show_default=False)], *,
         api_key: ApiKey = None, timeout: Timeout = 120.0) -> None:
    """Load NAME:VERSION from the server's registry beside the serving version (checked on
    its golden requests); a traffic policy can then name it."""
    client = AdminClient(url, api_key=api_key, timeout=timeout)
    answer = client.call("POST", f"models/{name}/versions/{version}/load")
    _out.print(f"loaded {answer['loaded']}")


def unload(url: Url, name: Name,
           version: Annotated[str, typer.Argument(help="e.g. 1.0.0", show_default=False)], *,
           api_key: ApiKey = None, timeout: Timeout = 60.0) -> None:
    """Stop serving NAME:VERSION (refused while the traffic policy names it)."""
    client = AdminClient(url, api_key=api_key, timeout=timeout)
    answer = client.call("POST", f"models/{name}/versions/{version}/unload")
    _out.print(f"unloaded {answer['unloaded']}")


def describe_policy(policy: dict[str, Any] | None) -> str:
    """One line for a policy as the admin API returns it."""
    if not policy:
        return "no policy (every request goes to the serving version)"
    arms = policy["arms"]
    total = sum(a["weight"] for a in arms) or 1.0
    parts = [" ".join(filter(None, [a["version"], f"({a['name']})" if a.get("name") else "",
                                    _pct(100.0 * a["weight"] / total)])) for a in arms]
    text = " · ".join(parts)
    if policy.get("shadow"):
        text += f"; shadow {', '.join(policy['shadow'])}"
    if policy.get("sticky_header"):
        text += f"; sticky by {policy['sticky_header']}"
    return text


def _describe_refusal(refused: dict[str, Any]) -> str:
    """One line for a refusal as ``GET /admin/models`` returns it."""
    ref = f"{refused['name']}:{refused['version']}"
    reason = str(refused["reason"]).removeprefix(f"{ref} refused: ")
    return f"refused {ref} ({str(refused['action']).replace('_', ' ')}): {reason}"


def _build_policy(client: AdminClient, name: str, *, weights: str | None, canary: str | None,
                  percent: float | None, shadow: str | None,
                  sticky_header: str | None) -> TrafficPolicy:
    if weights is not None:
        return TrafficPolicy.weighted(_weights(weights), sticky_header=sticky_header)
    if canary is not None:
        if percent is None:
            raise InvalidInput("give the canary's share with --percent", field="--percent")
        return TrafficPolicy.canary(_serving(client, name), canary, percent,
                                    sticky_header=sticky_header)
    if shadow is not None:
        primary = TrafficPolicy.shadowing(_serving(client, name), shadow)
        return primary.model_copy(update={"sticky_header": sticky_header})
    current = _policy(client, name)
    if current is None:
        raise InvalidInput(f"{name} has no traffic policy to make sticky; combine "
                           "--sticky-header with --weights or --canary", field="--sticky-header")
    return TrafficPolicy.parse(current | {"sticky_header": sticky_header})


def _weights(text: str) -> dict[str, float]:
    """``1.0.0=90,1.1.0=10`` -> {"1.0.0": 90.0, "1.1.0": 10.0}; the policy checks the values."""
    out: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",")):
        version, _, weight = (part.strip() for part in item.partition("="))
        try:
            if not version:
                raise ValueError(item)
            out[version] = float(weight)
        except ValueError:
            raise InvalidInput(f"'{item}' is not VERSION=WEIGHT (e.g. 1.0.0=90,1.1.0=10)",
                               field="--weights") from None
    return out


def _serving(client: AdminClient, name: str) -> str:
    version: str | None = client.model(name).get("default")
    if version is None:
        raise NotFound(f"{client.url} serves no version of '{name}'")
    return version


def _policy(client: AdminClient, name: str) -> dict[str, Any] | None:
    """The model's traffic policy (None: every request goes to its default version)."""
    policy: dict[str, Any] | None = client.model(name).get("traffic")
    return policy


def _report_move(client: AdminClient, answer: dict[str, Any]) -> None:
    move, follow = answer["move"], answer.get("follow")
    ref = f"{move['name']}@{move['alias']}"
    if move["kind"] == "unchanged":
        _out.print(f"{ref} already points at {move['to_version']}")
    else:
        verb = "rolled back" if move["kind"] == "rollback" else "moved"
        _out.print(f"{verb} {ref}: {move['from_version'] or '(unset)'} → {move['to_version']}")
    if follow is None:
        _out.print(f"{client.url} does not follow {ref}; other servers that do switch at their "
                   "next poll")
        return
    event = follow.get("event")
    if event is not None and event["outcome"] == "failed":
        raise ModelLoadError(f"{ref} moved to {event['to_version']}, but {client.url} cannot "
                             f"serve it and keeps serving {follow['serving']}: {event['error']}")
    _out.print(f"{client.url} serves {move['name']}:{follow['serving']}" + (
        f" (switched in {event['seconds']:.2f} s)" if event is not None else ""))


def _describe_follow(follow: dict[str, Any] | None) -> str:
    if not follow:
        return "-"
    return (f"@{follow['alias']} → {follow['target'] or '?'} (switches {follow['switches']}, "
            f"failures {follow['failures']})")


def _describe_failure(follow: dict[str, Any] | None) -> str:
    if not follow or not follow.get("last_error"):
        return "-"
    return f"{follow['failed_target']}: {follow['last_error']}"


def _error(status: int, text: str) -> ModelportError:
    try:
        message = str(json.loads(text).get("error") or text)
    except (ValueError, AttributeError):
        message = text[:300] or "(empty answer)"
    hint = (("; pass the server's admin key: --admin-key KEY or MODELPORT_ADMIN_KEY=KEY")
            if status in (401, 403) else "")
    return _ERRORS.get(status, ModelportError)(f"the server answered {status}: {message}{hint}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{round(value, 2):g}%"


def _login() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. a bare container)
        return None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))
