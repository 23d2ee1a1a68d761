"""`--dry-run`: what an edit or a batch row will do, resolved before any model loads.

One description per item, in the shape `batch --dry-run --json` prints and the tests compare
with what a real run records (results.jsonl's settings, seed, output and words): the settings
actually used, the mode, the blend words, the amplified words with their factors, the output
paths, the row's problem. A repeated amplified word (the official rules list it twice) is one
key of `amplify` (both occurrences get the same factor, so the edit is the same); its `count`
in `amplify_words`, the ordered list, keeps every occurrence.
"""

from __future__ import annotations

from .preparation import PreparedEdit


def describe_words(prepared: PreparedEdit | None) -> dict:
    """Mode, blend ([source words, target words] or None) and amplify of the (first) target."""
    if prepared is None or not prepared.words:
        return {"mode": None, "blend": None, "amplify": {}, "amplify_words": []}
    words = prepared.words[0]
    blend = [list(words.blend_source), list(words.blend_target)] if words.blend_target else None
    return {
        "mode": words.mode,
        "blend": blend,
        "amplify": dict(words.amplify),
        "amplify_words": [word for word, _ in words.amplify],
    }


def describe_item(item, side_by_side: bool = False) -> dict:
    """A batch item's resolved plan (manifests.BatchItem)."""
    outputs = [str(item.output)]
    if side_by_side:
        outputs.append(str(item.output.with_name(f"{item.output.stem}-side-by-side{item.output.suffix}")))
    described = {
        "row": item.number - 1,
        "image": str(item.image),
        "src": item.src,
        "tgt": item.tgt,
        **describe_words(item.prepared),
        "settings": item.settings.as_dict(),
        "seed": item.seed,
        "outputs": outputs,
        "problem": item.problem or _missing_photo(item.image),
    }
    if item.warning:
        described["warning"] = item.warning
    return described


def _missing_photo(path) -> str | None:
    """What the run would find first when it reads the photo (images.load_image's words)."""
    return None if path.is_file() else f"image not found: {path} (check the path)"


def describe_plan(plan) -> dict:
    """`edit --dry-run`: an edit plan (plans.EditPlan), one entry per cell and target."""
    items = []
    for cell, paths in zip(plan.cells, plan.outputs):
        for k, (target, path) in enumerate(zip(cell.targets, paths)):
            words = describe_words(PreparedEdit(cell.source, (target,), cell.settings, cell.words[k : k + 1]))
            items.append(
                {
                    "row": len(items),
                    "image": str(plan.input),
                    "src": cell.source,
                    "tgt": target,
                    **words,
                    "settings": cell.settings.as_dict(),
                    "seed": plan.seed,
                    "outputs": [str(path)],
                    "problem": None,
                }
            )
    extra = [str(p) for p in (plan.side_by_side, plan.sheet, plan.latent) if p is not None]
    return {"items": items, "other_outputs": extra, "notes": list(plan.notes)}


def dry_run_line(item: dict) -> str:
    """One line per item for people: row, mode, blend, amplify, output, or the problem."""
    head = f"row {item['row']}: {item['image']}"
    if item["problem"]:
        return f"{head}: PROBLEM {item['problem']}"
    blend = " -> ".join(" ".join(side) for side in item["blend"]) if item["blend"] else "none"
    amplify = ", ".join(f"{w}={item['amplify'][w]:g}" for w in item["amplify_words"]) or "none"
    settings = item["settings"]
    shown = f"method {settings['method']}, guidance {settings['guidance']:g}, tau {settings['tau']:g}"
    shown += f", seed {item['seed']}"
    words = f"mode {item['mode']}; blend {blend}; amplify {amplify}; " if item["mode"] else ""
    return f"{head}: {words}{shown} -> {', '.join(item['outputs'])}"
