"""The "Domains" section of docs/BENCHMARKS.md, rendered from benchmarks/results/domains.json only."""
from __future__ import annotations

from benchmarks import _common as C

SECTION = "## Domains"
MEMORY_TARGET, LATENCY_TARGET = 1.2, 2.0  # N = 4: RSS vs one single-domain server; all-4 vs one-domain latency


def _setup(r: dict) -> str:
    m, s = r["machine"], r["sizes"]
    d = r["domains"]
    names = ", ".join(f"{n} ({v['dataset']}: {v['gallery_images']} gallery photos of {v['gallery_classes']} unseen "
                      f"classes, {v['heldout_images']} held out)" for n, v in d.items())
    return (f"`{C.current_command(r['command'])}` ({r['date']}, commit {str(r.get('git_commit'))[:7]}, "
            f"{m.get('cpu_count', '?')} CPU cores shared with other work: load average {r['load_before']:.1f} "
            f"before, {r['load_after']:.1f} after; {r['measure_s'] / 60:.1f} min of measurements).\n\n"
            f"One frozen bundled MobileNetV2 (224 px) with the adapters of each domain: {names}. Each checkpoint "
            f"is the demo config trained for {r['max_steps']} steps on {s['train_classes']} training classes "
            f"(at most {s['train_per_class']} photos each): the benchmark measures serving, not accuracy. "
            "Every server and the in-process rows run torch (`--runtime torch`); onnxruntime is compared "
            "separately below where measured.\n")


def _memory(r: dict) -> str:
    sv = r["servers"]
    single = sv["single"]
    names = list(single)
    one = single[names[0]]["rss_after_mb"]
    rows = []
    for k, v in sv["multi"].items():
        n = int(k)
        total = sum(single[x]["rss_after_mb"] for x in names[:n])
        rows.append((n, ", ".join(names[:n]), f"{total:.0f}", f"{v['rss_after_mb']:.0f}",
                     f"{v['rss_after_mb'] / one:.2f}x", f"{v['start_s']:.0f}"))
    table = C.md_table(("N", "domains", "N single-domain servers, RSS MB (sum)", "one N-domain server, RSS MB",
                        f"vs one single-domain server ({one:.0f} MB)", "start-up s"), rows, "rlrrrr")
    four = sv["multi"]["4"]["rss_after_mb"] / one
    extra = sv["multi"]["4"]["rss_after_mb"] - sv["multi"]["1"]["rss_after_mb"]
    alone = sum(single[x]["rss_after_mb"] for x in names[:4])
    verdict = "meets" if four <= MEMORY_TARGET else "misses"
    return (f"**Memory** (RSS after the timed queries):\n\n{table}\n\nAt N = 4 the server holds "
            f"{four:.2f}x the memory of a one-domain server: it {verdict} the target (<= {MEMORY_TARGET}x). "
            f"The three domains beyond the first add {extra:.0f} MB to the server; four separate servers "
            f"hold {alone:.0f} MB. Most of a server's memory is the libraries it loads, once per process.\n")


def _http(r: dict) -> str:
    sv = r["servers"]
    rows = []
    for n, v in sv["single"].items():
        lat = v["latency"]["one"]
        rows.append((f"single-domain ({n})", f"{lat['p50_ms']:.0f} / {lat['p95_ms']:.0f}", "", ""))
    for k, v in sv["multi"].items():
        lat = v["latency"]

        def cell(key: str) -> str:
            return f"{lat[key]['p50_ms']:.0f} / {lat[key]['p95_ms']:.0f}" if key in lat else ""
        rows.append((f"{k}-domain", cell("one"), cell("all"), cell("routed")))
    errors = sum(x["errors"] for v in [*sv["single"].values(), *sv["multi"].values()] for x in v["latency"].values())
    table = C.md_table(("server", "one domain p50 / p95 ms", "all p50 / p95 ms", "routed p50 / p95 ms"), rows, "lrrr")
    base = sv["single"][next(iter(sv["single"]))]["latency"]["one"]["p50_ms"]
    four = sv["multi"]["4"]["latency"]["all"]["p50_ms"]
    verdict = "meets" if four <= LATENCY_TARGET * base else "misses"
    return (f"**Latency over HTTP** ({r['repeats']} uploads per cell, one at a time: upload, decode, embed, "
            f"search, JSON; {errors} errors):\n\n{table}\n\nA query to all 4 domains takes {four / base:.2f}x the "
            f"p50 of a single-domain server ({four:.0f} vs {base:.0f} ms): it {verdict} the target "
            f"(<= {LATENCY_TARGET:.0f}x).\n")


def _shared(r: dict) -> str:
    ip = r["in_process"]
    rows = []
    for row in ip["latency"]:
        rows.append((row["domains"], "shared prefix" if row["shared_prefix"] else "whole network per domain",
                     f"{row['one_ms']:.1f}", f"{row['all_ms']:.1f}",
                     f"{row['routed_ms']:.1f}" if "routed_ms" in row else ""))
    table = C.md_table(("N", "path", "one domain ms", "all ms", "routed ms"), rows, "rlrrr")
    tp = C.md_table(("path", "target", "images", "images/s"),
                    [("shared prefix" if t["shared_prefix"] else "whole network per domain", t["target"],
                      t["images"], f"{t['images_per_s']:.1f}") for t in ip["throughput"]], "llrr")
    splits = ", ".join(f"{n} {s}" for n, s in ip["splits"].items())
    by = {(x["domains"], x["shared_prefix"]): x for x in ip["latency"]}
    shared, whole, one = by[(4, True)]["all_ms"], by[(4, False)]["all_ms"], by[(1, True)]["one_ms"]
    tput = {(t["shared_prefix"], t["target"]): t["images_per_s"] for t in ip["throughput"]}
    return (f"**Shared frozen prefix vs the whole network per domain**, in one process, the same models "
            f"(median of {r['repeats']} single-image queries, model and search, decoding excluded; "
            f"{ip['torch_threads']} torch thread{'s' if ip['torch_threads'] > 1 else ''}; the settings "
            "interleaved query by query, so that each sees "
            f"the same load). First adapted stage of each domain (of {ip['stages']}): {splits}.\n\n{table}\n\n"
            f"A query to all 4 domains: {shared:.1f} ms with the shared prefix ({shared / one:.2f}x one domain), "
            f"{whole:.1f} ms with a whole network per domain ({whole / one:.2f}x).\n\n"
            f"Batch search (`dva search` with domains: decode, embed in batches of 32, search; interleaved batch "
            f"by batch), the held-out photos of the 4 domains:\n\n{tp}\n\nSearching all 4 domains, the shared "
            f"prefix runs {tput[(True, 'all')] / tput[(False, 'all')]:.1f}x the images/s of a whole network per "
            "domain.\n")


def _routing(r: dict) -> str:
    rows = []
    for row in r["in_process"]["routing"]:
        per = ", ".join(f"{n} {v:.0f}" for n, v in row["per_domain"].items())
        rows.append((row["router"], f"{row['accuracy']:.1f}", per, f"{row['mean_margin']:.3f}",
                     f"{row['prototypes_s']:.1f}"))
    table = C.md_table(("router", "accuracy %", "per domain %", "mean margin", "prototypes built in s"), rows, "lrlrr")
    best = max(r["in_process"]["routing"], key=lambda x: (x["accuracy"], x["mean_margin"]))
    n = r["in_process"]["routing"][0]["queries"]
    return (f"**Routing** of {n} held-out photos (not in any gallery) among the 4 domains; prototypes from "
            f"at most {r['route_sample']} gallery images (frozen) or vectors (adapted) per domain, built "
            f"without the cache:\n\n{table}\n\nThe {best['router']} router routes best here. The frozen "
            "router embeds its gallery sample at a server's first start only (the prototypes are cached; the "
            "start-up times above read the cache); per query it runs the frozen head once and then only the "
            "chosen domain's suffix, where the adapted router runs every domain's suffix.\n")


def _runtimes(r: dict) -> str:
    rt = r["in_process"]["runtimes"]
    rows = [(x["runtime"], f"{x['one_ms']:.1f}", f"{x['all_ms']:.1f}", f"{x['routed_ms']:.1f}") for x in rt["latency"]]
    table = C.md_table(("runtime", "one domain ms", "all 4 ms", "routed ms"), rows, "lrrr")
    by = {x["runtime"]: x for x in rt["latency"]}
    cos = min(v for per in rt["min_cosine"].values() for v in per.values())
    ld = rt["load_s"]
    return (f"**torch vs onnxruntime**, the 4 domains in one process (`--runtimes-only`, {rt['date']}, commit "
            f"{str(rt.get('git_commit'))[:7]}; load average {rt['load_before']:.1f} before, {rt['load_after']:.1f} "
            f"after; median of {r['repeats']} single-image queries, model and search, the runtimes interleaved; "
            f"{rt['threads']} thread{'s' if rt['threads'] > 1 else ''} each). onnxruntime runs one prefix graph up "
            "to the earliest first adapter and one suffix graph per domain:\n\n"
            f"{table}\n\nA query to all 4 domains: {by['onnx']['all_ms'] / by['torch']['all_ms']:.2f}x torch's "
            f"time on onnxruntime. Lowest cosine between the runtimes' embeddings of {rt['images']} held-out "
            f"photos: {cos:.7f}. Loading on onnxruntime took {ld['onnx_first']:.1f} s with "
            f"{rt['graphs_exported_first']} graphs exported, {ld['onnx_again']:.1f} s reusing them.\n")


def markdown(r: dict) -> str:
    """The whole section body from one result file."""
    parts = [_setup(r)]
    if "servers" in r:
        parts += [_memory(r), _http(r)]
    parts += [_shared(r), *([_runtimes(r)] if "runtimes" in r["in_process"] else []), _routing(r)]
    return "\n".join(parts)
