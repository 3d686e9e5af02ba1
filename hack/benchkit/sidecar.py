"""Section 1, the sidecar: resident memory under steady refreshing, CPU while idle,
time to the first token file against a bare httpx2 request, and what each token more
costs (one sidecar serving 5 tokens against one serving 1, issue 17)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
from tests.support import free_port

from .common import (
    BIN,
    CLK_TCK,
    PACE,
    PACE_TEXT,
    TOKEN_LIFETIME,
    CpuSample,
    Plan,
    Processes,
    Progress,
    cpu_sample,
    proc_status,
    sidecar_env,
    wait_for,
    warm_bytecode,
)
from .memory import import_profile, profile_imports


def bench_sidecar(plan: Plan, work: Path, procs: Processes, say: Progress) -> dict[str, Any]:
    from tests.idp import OidcProviderFactory

    section = "sidecar"
    work.mkdir(parents=True)
    say.say(section, "starting two oidc-provider IdPs (5-second and 1-hour tokens)")
    idps = OidcProviderFactory(work / "idp")
    try:
        short = idps.start(ttl=TOKEN_LIFETIME)
        long = idps.start(ttl=3600)
        secret = work / "client-secret"
        secret.write_text(short.basic.client_secret or "")
        common = {
            "client_id": short.basic.client_id,
            "client_secret_file": str(secret),
            "resource": short.resource,
            "scope": "api:read",
            **_reporting(work / "report"),
        }
        _warm_up(work, procs, say, short, common)
        steady, idle = _steady_and_idle(plan, work, procs, say, short, long, common)
        ttft = _time_to_first_token(plan, work, procs, say, short, common)
        tokens = _tokens_rss(plan, work, procs, say, long, common)
    finally:
        idps.close()
    result: dict[str, Any] = {
        "steady": steady,
        "idle": idle,
        "first_token": ttft,
        "tokens": tokens,
    }
    if plan.profile:
        say.say(section, "profiling resident memory by module (fresh interpreters, ~20 s)")
        result["profile"] = profile_imports()
    else:
        say.say(section, "profiling imports (one fresh interpreter; --quick skips the rest)")
        result["profile"] = {"by_package": import_profile(traced=False)}
    return result


def _warm_up(work: Path, procs: Processes, say: Progress, idp: Any, common: dict[str, str]) -> None:
    """One sidecar to its first token and one bare request, unmeasured: what they import
    is then in the bytecode cache, as it is in the image (`common.warm_bytecode`)."""
    say.say("sidecar", "warming the bytecode cache (one sidecar, one bare request)")
    (work / "warm").mkdir()
    env = sidecar_env(
        token_url=idp.token_url,
        output=str(work / "warm" / "token"),
        listen=f"127.0.0.1:{free_port()}",
        **common,
    )
    warm_bytecode([str(BIN / "token-refresher")], work / "warm" / "token", env, procs)
    client = idp.basic
    subprocess.run(
        [sys.executable, "-P", str(_BARE_REQUEST), idp.token_url, client.client_id,
         client.client_secret or "", idp.resource],
        env=sidecar_env(), stdout=subprocess.DEVNULL, check=True, timeout=60,
    )  # fmt: skip


def _reporting(directory: Path) -> dict[str, str]:
    """Failure reporting configured as injection configures it, so the figures are an
    injected sidecar's. The endpoint is a closed port: nothing fails, nothing is sent."""
    from token_refresher_operator.devcert import write_self_signed

    directory.mkdir()
    ca = write_self_signed(directory)
    (directory / "token").write_text("bench-report-token")
    return {
        "report_url": f"https://127.0.0.1:{free_port()}/report",
        "report_token_file": str(directory / "token"),
        "report_ca_file": str(ca.cert_file),
        "pod_namespace": "bench",
        "pod_name": "bench",
        "pod_uid": "00000000-0000-0000-0000-000000000000",
    }


def _steady_and_idle(
    plan: Plan,
    work: Path,
    procs: Processes,
    say: Progress,
    short: Any,
    long: Any,
    common: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the busy sidecar (5-second tokens, a refresh every 0.5 s) and the idle one
    (1-hour tokens) side by side: each is measured on its own process only."""
    section = "sidecar"
    busy_port, idle_port = free_port(), free_port()

    def start(name: str, issuer: str, port: int, **pace: str) -> subprocess.Popen[Any]:
        (work / name).mkdir()
        return procs.start(
            [str(BIN / "token-refresher")],
            env=sidecar_env(
                issuer=issuer,
                output=str(work / name / "token"),
                listen=f"127.0.0.1:{port}",
                **pace,
                **common,
            ),
            stdout=subprocess.DEVNULL,
            stderr=(work / f"{name}.log").open("wb"),
        )

    busy = start("busy", short.issuer, busy_port, **PACE)
    idle = start("idle", long.issuer, idle_port)
    status_url = f"http://127.0.0.1:{busy_port}/status"
    metrics_url = f"http://127.0.0.1:{busy_port}/metrics"
    expected = plan.refreshes * 0.5 + 5
    say.say(
        section,
        f"{plan.refreshes} refreshes of 5-second tokens (REFRESH_RATIO=0.1, JITTER=0, "
        f"MIN_REFRESH_INTERVAL=0.3: one every 0.5 s, about {expected:.0f} s), and beside it "
        f"an idle sidecar with 1-hour tokens watched for {plan.idle_seconds:.0f} s",
    )
    wait_for("the busy sidecar's first token", (work / "busy" / "token").exists, timeout=30)
    first = proc_status(busy.pid)
    wait_for("the idle sidecar's token", (work / "idle" / "token").exists, timeout=30)
    time.sleep(2.0)  # let it log, answer nothing, and go to sleep
    idle_before = cpu_sample(idle.pid)
    idle_rss = proc_status(idle.pid)
    idle_until = time.monotonic() + plan.idle_seconds
    idle_after: CpuSample | None = None

    count = 0
    deadline = time.monotonic() + plan.refreshes * 2.0 + 60
    next_note = time.monotonic() + 10
    next_scrape = time.monotonic()
    with httpx2.Client(trust_env=False, timeout=5) as http:
        while count < plan.refreshes or idle_after is None:
            now = time.monotonic()
            if idle_after is None and now >= idle_until:
                idle_after = cpu_sample(idle.pid)
            if count < plan.refreshes:
                # What the kubelet and Prometheus would do: probe, and scrape now and then.
                count = int(http.get(status_url).json()["refresh_count"])
                if now >= next_scrape:
                    http.get(metrics_url).raise_for_status()
                    next_scrape = now + 10
            if now > deadline:
                raise TimeoutError(f"the busy sidecar made {count} refreshes in time")
            if now >= next_note:
                left = max((plan.refreshes - count) * 0.5, idle_until - now, 0)
                say.say(section, f"{count}/{plan.refreshes} refreshes, about {left:.0f} s left")
                next_note = now + 10
            time.sleep(0.25 if count < plan.refreshes else 0.05)
        status = http.get(status_url).json()
    last = proc_status(busy.pid)
    busy_rc, idle_rc = procs.stop(busy), procs.stop(idle)

    window = idle_after.at - idle_before.at
    cpu_seconds = (idle_after.runtime_ns - idle_before.runtime_ns) / 1e9
    steady = {
        "refreshes": status["refresh_count"],
        "failed_attempts": status["consecutive_failures"],
        "token_lifetime_s": TOKEN_LIFETIME,
        "pace": PACE_TEXT,
        "reporting": "configured as injected (REPORT_URL, token, CA); never called",
        "rss_mib": round(last["VmRSS"] / 1024, 2),
        "hwm_mib": round(last["VmHWM"] / 1024, 2),
        "rss_anon_mib": round(last["RssAnon"] / 1024, 2),
        "rss_file_mib": round(last["RssFile"] / 1024, 2),
        "rss_after_first_token_mib": round(first["VmRSS"] / 1024, 2),
        "growth_kib": last["VmRSS"] - first["VmRSS"],
        "threads": last["Threads"],
        "exit_code": busy_rc,
    }
    idle_result = {
        "window_s": round(window, 2),
        "cpu_seconds": round(cpu_seconds, 6),
        "cpu_ticks": idle_after.ticks - idle_before.ticks,
        "wakeups": idle_after.switches - idle_before.switches,
        "cpu_seconds_per_hour": round(cpu_seconds * 3600 / window, 4),
        "tick_resolution_seconds_per_hour": round(3600 / window / CLK_TCK, 3),
        "rss_mib": round(idle_rss["VmRSS"] / 1024, 2),
        "exit_code": idle_rc,
    }
    say.say(
        section,
        f"steady RSS {steady['rss_mib']} MiB (peak {steady['hwm_mib']}); idle: "
        f"{idle_result['cpu_seconds']} CPU-s and {idle_result['wakeups']} wake-ups in "
        f"{window:.0f} s",
    )
    return steady, idle_result


# A fresh interpreter posting the same token request with httpx2 alone, run by path; `-P`
# prepends nothing to sys.path, so no module of this folder shadows another.
_BARE_REQUEST = Path(__file__).with_name("bare_request.py")


def _time_to_first_token(
    plan: Plan, work: Path, procs: Processes, say: Progress, idp: Any, common: dict[str, str]
) -> dict[str, Any]:
    """Process start to token file (the sidecar, TOKEN_URL so no discovery) against process
    start to token response (a fresh interpreter importing httpx2 and posting the same
    request), alternating, the median of `ttft_runs` each."""
    section = "sidecar"
    say.say(
        section, f"time to first token: {plan.ttft_runs} runs each (about {plan.ttft_runs * 3} s)"
    )
    sidecar_times: list[float] = []
    bare_times: list[float] = []
    for run in range(plan.ttft_runs):
        out = work / f"ttft-{run}"
        out.mkdir()
        env = sidecar_env(
            token_url=idp.token_url,
            output=str(out / "token"),
            listen=f"127.0.0.1:{free_port()}",
            **common,
        )
        started = time.perf_counter()
        proc = procs.start(
            [str(BIN / "token-refresher")], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for("the token file", (out / "token").exists, timeout=30, every=0.001)
        sidecar_times.append(time.perf_counter() - started)
        procs.stop(proc)

        client = idp.basic
        argv = [
            sys.executable, "-P", str(_BARE_REQUEST),
            idp.token_url, client.client_id, client.client_secret or "", idp.resource,
        ]  # fmt: skip
        started = time.perf_counter()
        proc = procs.start(argv, env=sidecar_env(), stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        bare_times.append(time.perf_counter() - started)
        if line.strip() != "token":
            raise RuntimeError("the bare httpx2 token request failed")
        procs.stop(proc)
    sidecar_s = statistics.median(sidecar_times)
    bare_s = statistics.median(bare_times)
    return {
        "runs": plan.ttft_runs,
        "sidecar_s": round(sidecar_s, 3),
        "bare_httpx2_s": round(bare_s, 3),
        "ratio": round(sidecar_s / bare_s, 2),
        "sidecar_all_s": [round(t, 3) for t in sidecar_times],
        "bare_httpx2_all_s": [round(t, 3) for t in bare_times],
    }


# Four named tokens besides the default one: other scopes at the same IdP, so each is
# a token of its own (its own request, file, state, schedule and series), as an app
# calling several APIs has them.
_NAMED_TOKENS = {
    "invoices": {"scope": "api:read"},
    "payments": {"scope": "api:write"},
    "ledger": {"scope": "api:read api:write"},
    "audit": {"scope": "api:read"},
}


def _tokens_rss(
    plan: Plan, work: Path, procs: Processes, say: Progress, idp: Any, common: dict[str, str]
) -> dict[str, Any]:
    """RSS of a sidecar serving 5 tokens against one serving 1, started side by side
    (1-hour tokens), once each has every token on disk and has answered /status and
    /metrics; the median of `token_rounds` pairs."""
    section = "sidecar"
    say.say(
        section,
        f"1 token against 5 tokens in one sidecar: {plan.token_rounds} pairs "
        f"(about {plan.token_rounds * 6} s)",
    )
    rss: dict[int, list[int]] = {1: [], 5: []}
    for run in range(plan.token_rounds):
        started = {}
        for count in (1, 5):
            out = work / f"tokens-{count}-{run}"
            out.mkdir()
            port = free_port()
            named = dict(list(_NAMED_TOKENS.items())[: count - 1])
            env = sidecar_env(
                issuer=idp.issuer,
                output=str(out / "token"),
                listen=f"127.0.0.1:{port}",
                **({"tokens": json.dumps(named)} if named else {}),
                **common,
            )
            proc = procs.start(
                [str(BIN / "token-refresher")], env=env, stdout=subprocess.DEVNULL,
                stderr=(work / f"tokens-{count}-{run}.log").open("wb"),
            )  # fmt: skip
            started[count] = (proc, f"http://127.0.0.1:{port}")
        with httpx2.Client(trust_env=False, timeout=5) as http:
            for count, (_proc, url) in started.items():

                def ready(url: str = url) -> bool:
                    try:
                        return http.get(f"{url}/readyz").status_code == 200
                    except httpx2.HTTPError:
                        return False

                wait_for(f"the {count}-token sidecar's files", ready, timeout=60)
                status = http.get(f"{url}/status").json()
                if len(status["tokens"]) != count:
                    raise RuntimeError(f"the sidecar serves {len(status['tokens'])} tokens")
                for _ in range(3):  # what probes and Prometheus do
                    http.get(f"{url}/status").raise_for_status()
                    http.get(f"{url}/metrics").raise_for_status()
        time.sleep(1.0)
        for count, (proc, _url) in started.items():
            rss[count].append(proc_status(proc.pid)["VmRSS"])
            procs.stop(proc)
    one, five = statistics.median(rss[1]), statistics.median(rss[5])
    result = {
        "rounds": plan.token_rounds,
        "rss_1_token_mib": round(one / 1024, 2),
        "rss_5_tokens_mib": round(five / 1024, 2),
        "delta_mib": round((five - one) / 1024, 2),
        "rss_1_token_all_kib": rss[1],
        "rss_5_tokens_all_kib": rss[5],
    }
    say.say(
        section,
        f"RSS with 1 token {result['rss_1_token_mib']} MiB, with 5 tokens "
        f"{result['rss_5_tokens_mib']} MiB: {result['delta_mib']:+.2f} MiB",
    )
    return result
