"""The targets, the verdicts and the table `make bench` prints."""

from __future__ import annotations

from typing import Any

# The targets: (how a figure meets it, the limit, what it says).
TARGETS = {
    "sidecar_rss_mib": ("<=", 38.0, "sidecar RSS after 200 refreshes ≤ 38 MiB"),
    "first_token_ratio": ("<=", 1.6, "time to first token ÷ a bare httpx2 request ≤ 1.6"),
    "five_tokens_extra_rss_mib": (
        "<=",
        2.0,
        "RSS of a sidecar serving 5 tokens ≤ 2 MiB above 1 token",
    ),
    "container_working_set_mib": (
        "<=",
        40.0,
        "sidecar container working set in a real pod on the real node ≤ 40 MiB",
    ),
    "idle_cpu_seconds_per_hour": ("<=", 1.0, "idle sidecar CPU ≈ 0 (< 1 CPU-s per hour)"),
    "pod_creation_ratio": (">=", 0.8, "pod creations/s with injection ÷ without ≥ 0.8"),
    "pod_creation_ratio_to_stand_in": (
        ">=",
        0.95,
        "pod creations/s with injection ÷ through a bare stand-in returning the same patch "
        "(each against plain pods) ≥ 0.95",
    ),
    "operator_cpu_ms_per_injected_pod": ("<=", 1.5, "operator CPU per injected pod ≤ 1.5 ms"),
    "admission_p99_ms": (
        "<=",
        5.0,
        "admission latency p99 as the apiserver measures it, for our webhook, pods created "
        "one at a time ≤ 5 ms",
    ),
    "fleet_peak_to_mean": ("<=", 2.0, "fleet IdP peak ÷ mean requests/s ≤ 2"),
    "follower_age_p99_s": (
        "<=",
        2.0,
        "follower access-token age p99 (how long after the holder a follower has it) ≤ 2 s",
    ),
}


def verdicts(results: dict[str, Any], *, judge: bool) -> list[dict[str, Any]]:
    """Each target with its figure; `met` is None when not judged (--quick's tiny counts)."""
    figures: dict[str, float] = {}
    if "sidecar" in results:
        figures["sidecar_rss_mib"] = results["sidecar"]["steady"]["rss_mib"]
        figures["idle_cpu_seconds_per_hour"] = results["sidecar"]["idle"]["cpu_seconds_per_hour"]
        figures["first_token_ratio"] = results["sidecar"]["first_token"]["ratio"]
        if "tokens" in results["sidecar"]:
            figures["five_tokens_extra_rss_mib"] = results["sidecar"]["tokens"]["delta_mib"]
    if "container" in results:
        figures["container_working_set_mib"] = results["container"]["working_set_mib"]
    if "webhook" in results:
        w = results["webhook"]
        figures["pod_creation_ratio"] = w["ratio"]
        if w.get("ratio_to_stand_in") is not None:
            figures["pod_creation_ratio_to_stand_in"] = w["ratio_to_stand_in"]
        figures["operator_cpu_ms_per_injected_pod"] = w["cpu_ms_per_pod"]["injected"]["operator"]
        if "p99_ms" in w.get("apiserver_admission_one_at_a_time", {}):
            figures["admission_p99_ms"] = w["apiserver_admission_one_at_a_time"]["p99_ms"]
    if "fleet" in results:
        default = results["fleet"]["cases"][0]
        figures["fleet_peak_to_mean"] = default["peak_to_mean_worst"]
    if "family" in results and results["family"]["follower_age_p99_s"] is not None:
        figures["follower_age_p99_s"] = results["family"]["follower_age_p99_s"]
    rows = []
    for key, (op, limit, text) in TARGETS.items():
        if key not in figures:
            continue
        value = figures[key]
        met = (value <= limit if op == "<=" else value >= limit) if judge else None
        rows.append({"target": key, "text": text, "figure": value, "limit": limit, "met": met})
    return rows


def table(results: dict[str, Any]) -> str:
    lines: list[tuple[str, str, str]] = []
    targets = {row["target"]: row for row in results.get("targets", [])}

    def judged(key: str) -> str:
        row = targets.get(key)
        if row is None:
            return ""
        op = TARGETS[key][0].replace("<=", "≤").replace(">=", "≥")
        verdict = {True: "met", False: "MISSED", None: "not judged (--quick)"}[row["met"]]
        return f"{op} {row['limit']:g}: {verdict}"

    if "sidecar" in results:
        s = results["sidecar"]
        st, idle, ttft = s["steady"], s["idle"], s["first_token"]
        lines += [
            (f"sidecar RSS after {st['refreshes']} refreshes (MiB)", f"{st['rss_mib']:.1f}",
             judged("sidecar_rss_mib")),
            ("sidecar peak RSS, VmHWM (MiB)", f"{st['hwm_mib']:.1f}", ""),
            ("sidecar RSS growth, first token → last (KiB)", f"{st['growth_kib']}", ""),
            (f"idle sidecar CPU, {idle['window_s']:.0f} s window → per hour (CPU-s)",
             f"{idle['cpu_seconds_per_hour']:.3f}", judged("idle_cpu_seconds_per_hour")),
            ("idle sidecar wake-ups in the window", f"{idle['wakeups']}", ""),
            ("time to first token file, sidecar (s)", f"{ttft['sidecar_s']:.3f}", ""),
            ("time to token, bare httpx2 request (s)", f"{ttft['bare_httpx2_s']:.3f}", ""),
            ("  ratio sidecar ÷ bare", f"{ttft['ratio']:.2f}", judged("first_token_ratio")),
        ]  # fmt: skip
        if "tokens" in s:
            tk = s["tokens"]
            lines += [
                ("sidecar RSS serving 1 token (MiB)", f"{tk['rss_1_token_mib']:.1f}", ""),
                ("sidecar RSS serving 5 tokens (MiB)", f"{tk['rss_5_tokens_mib']:.1f}", ""),
                ("  5 tokens minus 1 token (MiB)", f"{tk['delta_mib']:+.2f}",
                 judged("five_tokens_extra_rss_mib")),
            ]  # fmt: skip
        profile = s.get("profile", {})
        if "after_import_kib" in profile:
            lines += [
                ("  profile: bare interpreter RSS (MiB)",
                 f"{profile['interpreter_kib'] / 1024:.1f}", ""),
                ("  profile: RSS after importing the sidecar (MiB)",
                 f"{profile['after_import_kib'] / 1024:.1f}", ""),
            ]  # fmt: skip
    if "container" in results:
        pods = results["container"]["pods"]
        first, later = pods["sidecar-first"], pods["sidecar-later"]

        def both(key: str, form: str = ".1f") -> str:
            return f"{first[key]:{form}} / {later[key]:{form}}"

        def kubelet(pod: dict[str, Any]) -> str:
            mib = pod["kubelet_working_set_mib"]
            return "-" if mib is None else f"{mib:.1f}"

        lines += [
            (f"container working set after {first['refreshes']} refreshes, first pod of "
             "the image / next (MiB)", both("working_set_mib"),
             judged("container_working_set_mib")),
            ("  the kubelet's figure, /metrics/resource (MiB)",
             f"{kubelet(first)} / {kubelet(later)}", ""),
            ("  usage, the ceiling of the working set (MiB)", both("usage_mib"), ""),
            ("  anonymous memory (MiB)", both("anon_mib"), ""),
            ("  page cache, active / inactive file (MiB)",
             f"{first['active_file_mib']:.1f}/{first['inactive_file_mib']:.1f} / "
             f"{later['active_file_mib']:.1f}/{later['inactive_file_mib']:.1f}", ""),
            ("  kernel: usage less anon and cache (MiB)", both("kernel_mib"), ""),
            ("sidecar RSS inside the container = anon + file (MiB)",
             f"{first['process_rss_mib']:.1f} = {first['process_rss_anon_mib']:.1f} + "
             f"{first['process_rss_file_mib']:.1f}", ""),
            ("container CPU per refresh, first / next (ms)", both("cpu_ms_per_refresh", ".2f"),
             ""),
            ("container CPU, start to first token (s)",
             both("cpu_seconds_to_first_token", ".2f"), ""),
        ]  # fmt: skip
    if "webhook" in results:
        w = results["webhook"]
        lat = w["create_latency_ms"]
        overhead = w["admission_overhead_ms"]
        lines += [
            ("pods/s without injection", f"{w['plain_pods_per_s']:.1f}", ""),
            ("pods/s with injection", f"{w['injected_pods_per_s']:.1f}", ""),
            ("  ratio with ÷ without", f"{w['ratio']:.2f}", judged("pod_creation_ratio")),
            ("create latency p50/p99 without (ms)",
             f"{lat['plain']['p50']:.1f} / {lat['plain']['p99']:.1f}", ""),
            ("create latency p50/p99 with (ms)",
             f"{lat['injected']['p50']:.1f} / {lat['injected']['p99']:.1f}", ""),
            ("  admission overhead p50/p99 (ms)",
             f"{overhead['p50']:.1f} / {overhead['p99']:.1f}", ""),
            ("/mutate called directly p50/p99 (ms)",
             f"{w['mutate_direct_ms']['p50']:.2f} / {w['mutate_direct_ms']['p99']:.2f}", ""),
        ]  # fmt: skip
        api = w.get("apiserver_admission", {})
        alone = w.get("apiserver_admission_one_at_a_time", {})
        if "p99_ms" in alone:
            lines += [
                ("admission latency, the apiserver's histogram, one pod at a time p50/p99 (ms)",
                 f"{alone['p50_ms']:.2f} / {alone['p99_ms']:.2f}", judged("admission_p99_ms")),
                ("  share within 5 ms; create latency p50/p99 (ms)",
                 f"{alone['share_within_5ms']:.1%}; {alone['create_p50_ms']:.1f} / "
                 f"{alone['create_p99_ms']:.1f}", ""),
            ]  # fmt: skip
        if "p99_ms" in api:
            lines += [
                ("  the same in the interleaved batches (saturated) p50/p99 (ms)",
                 f"{api['p50_ms']:.2f} / {api['p99_ms']:.2f}", ""),
                ("  calls to the webhook per injected pod; share within 5 ms",
                 f"{api['calls'] / w['pods_per_kind']:.2f}; {api['share_within_5ms']:.1%}", ""),
            ]  # fmt: skip
        for name in ("operator", "apiserver", "etcd", "client"):
            cpu = w["cpu_ms_per_pod"]
            lines.append(
                (
                    f"{name} CPU per pod, with / without injection (ms)",
                    f"{cpu['injected'].get(name, 0):.2f} / {cpu['plain'].get(name, 0):.2f}",
                    judged("operator_cpu_ms_per_injected_pod") if name == "operator" else "",
                )
            )
        if w.get("ratio_to_stand_in") is not None:
            lines.append(
                (
                    "ratio with injection ÷ ratio through the operator-patch stand-in",
                    f"{w['ratio_to_stand_in']:.2f}",
                    judged("pod_creation_ratio_to_stand_in"),
                )
            )
        for mode, floor in w.get("floor", {}).items():
            api = floor.get("apiserver_admission_one_at_a_time", {})
            latency = ""
            if api.get("calls"):
                latency = f"; alone p50/p99 {api['p50_ms']:.1f}/{api['p99_ms']:.1f} ms"
            lines.append(
                (
                    f"  profile: ratio through a stand-in webhook ({mode}){latency}",
                    f"{floor['ratio']:.2f}",
                    "",
                )
            )
    if "fleet" in results:
        f = results["fleet"]
        for case in f["cases"]:
            what = "with start-up window" if case["start_up_window"] else "without (old)"
            key = "fleet_peak_to_mean" if case is f["cases"][0] else ""
            lines.append(
                (
                    f"fleet peak ÷ mean, JITTER={case['jitter']:g}, {what}",
                    f"{case['peak_to_mean']:.2f} (worst {case['peak_to_mean_worst']:.2f})",
                    judged(key) if key else "",
                )
            )
    if "reports" in results:
        r = results["reports"]
        lines += [
            ("reports/s, first of each pod (TokenReview)", f"{r['cold_reports_per_s']:.1f}", ""),
            ("reports/s, cached reviews", f"{r['warm_reports_per_s']:.1f}", ""),
            ("report latency p50/p99, cached (ms)",
             f"{r['warm_latency_ms']['p50']:.1f} / {r['warm_latency_ms']['p99']:.1f}", ""),
            ("TokenReviews / pod reads for all reports",
             f"{r['token_reviews']} / {r['pod_reads']} for {r['reports_sent']}", ""),
        ]  # fmt: skip
    if "family" in results:
        fam = results["family"]

        def seconds(key: str) -> str:
            return "-" if fam[key] is None else f"{fam[key] * 1000:.1f}"

        lines += [
            (f"family: apiserver requests per refresh, {fam['replicas']} replicas in all",
             f"{fam['apiserver_requests_per_refresh']:.1f}", ""),
            ("family: follower access-token age p50 / p99 / max (ms)",
             f"{seconds('follower_age_p50_s')} / {seconds('follower_age_p99_s')} / "
             f"{seconds('follower_age_max_s')}", judged("follower_age_p99_s")),
            ("family: refresh tokens the IdP saw twice", f"{fam['refresh_tokens_presented_twice']}",
             ""),
        ]  # fmt: skip
    width = max(len(m) for m, _, _ in lines)
    fig = max(len(v) for _, v, _ in lines)
    out = [f"{'measure':<{width}}  {'figure':>{fig}}  target"]
    out.append("-" * (width + fig + 24))
    out += [f"{m:<{width}}  {v:>{fig}}  {t}".rstrip() for m, v, t in lines]
    return "\n".join(out)
