"""Building a synthetic pool as a versioned dataset: the generate stage run in shards, each shard finished into
its own Parquet file and listed with its sha256 in the dataset's manifest.

A shard is an ordinary run (`runs/<name>-<k>`, generate.seed = seed + k) stopped after generation, so a
killed shard resumes from its model-call cache and a finished shard is never generated again. Only records
the generators kept (an instruction the weak model answered) go into the dataset: that is the pool a team
would have on disk before curation. The held-out split uses the recipe's seed, never the shard's, so no
shard sees a held-out seed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console

from ballast.backends.models import EMBEDDED, file_sha256
from ballast.errors import InputError
from ballast.recipe import Recipe, load_recipe
from ballast.records import Record
from ballast.store import read_records, write_json, write_records

console = Console()

MANIFEST = "manifest.json"
CARD = "README.md"


def shard_file(k: int) -> str:
    return f"shard-{k:02d}.parquet"


def pool_folder(recipe_path: Path, recipe: Recipe) -> Path:
    if recipe.pool is None:
        raise InputError("a pool recipe needs a `pool:` section (shards, out)", file=recipe_path, field="pool")
    out = recipe.pool.out
    return out if out.is_absolute() else recipe_path.parent / out


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"shards": {}}


def _model_entry(name: str) -> dict[str, str]:
    m = EMBEDDED[name]
    return {"name": m.name, "package": m.package, "file": m.relpath, "sha256": m.sha256}


def _shard_entry(path: Path, records: list[Record], run_root: Path) -> dict:
    done = json.loads((run_root / "stages" / "generate" / "done.json").read_text(encoding="utf-8"))
    run_manifest = json.loads((run_root / "manifest.json").read_text(encoding="utf-8"))
    return {
        "file": path.name,
        "sha256": file_sha256(path),
        "records": len(records),
        "sources": dict(sorted(Counter(r.source.value for r in records).items())),
        "generate_seconds": done["seconds"],
        "calls_ok": done.get("calls_ok"),
        "calls_failed": done.get("calls_failed"),
        "code_sha256": run_manifest["code_sha256"],
        "git_commit": run_manifest["git_commit"],
    }


def build_pool(
    recipe_path: Path, run_recipe: Callable[..., Path], overrides: list[str] = (), shards: Iterable[int] | None = None
) -> Path:
    """Generate the shards not yet in the dataset folder (all of them, or those listed); returns the folder.
    `run_recipe` is the pipeline's (`ballast.pipeline.run_recipe`), which runs each shard up to generate: glue
    beside the pipeline, not above it."""
    from ballast.generate.stage import templates_used
    from ballast.policy.schema import load_policy
    from ballast.seeds import load_seeds, split_heldout

    recipe = load_recipe(recipe_path, list(overrides))
    folder = pool_folder(recipe_path, recipe)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = list(range(recipe.pool.shards)) if shards is None else list(shards)
    policy = load_policy(recipe.policy)
    split = split_heldout(load_seeds(recipe.seeds, policy), recipe.heldout_fraction, salt=f"heldout:{recipe.seed}")
    header = {
        "name": recipe.name,
        "recipe": recipe_path.name,
        "seed": recipe.seed,
        "policy": {
            "policy_id": policy.policy_id,
            "version": policy.version,
            "sha256": policy.sha256,
            "company": policy.company,
        },
        "seeds": {
            "file": recipe.seeds.name,
            "sha256": file_sha256(recipe.seeds),
            "training_seed_ids_sha256": _ids_sha256(r.id for r in split.train),
            "heldout_ids_sha256": _ids_sha256(split.heldout_ids),
        },
        "models": {"weak": _model_entry(recipe.models.weak), "strong": _model_entry(recipe.models.strong)},
        "templates": templates_used(recipe.generate),
        "decoding": {
            "instructions": recipe.generate.self_instruct.decoding.model_dump(),
            "instruction_writer": recipe.generate.self_instruct.writer,
            "responses": recipe.generate.responses.decoding.model_dump(),
            "response_mode": recipe.generate.responses.mode,
        },
    }
    for k in wanted:
        path = folder / shard_file(k)
        entry = read_manifest(folder)["shards"].get(str(k))
        if entry and path.is_file() and file_sha256(path) == entry["sha256"]:
            console.print(f"pool: shard {k} already in {folder.name}/ ({entry['records']} records)")
            continue
        shard = load_recipe(
            recipe_path, [*overrides, f"name={recipe.name}-{k:02d}", f"generate.seed={recipe.seed + k}"]
        )
        root = run_recipe(shard, until="generate")
        records = [r for r in read_records(root / "stages" / "generate" / "records.parquet") if r.kept]
        write_records(records, path)
        _update_manifest(folder, header, {str(k): _shard_entry(path, records, root)})
        console.print(f"pool: shard {k}: {len(records)} records -> {path}")
    _update_manifest(folder, header, {})
    return folder


def _update_manifest(folder: Path, header: dict, shards: dict[str, dict]) -> None:
    """Rewrite manifest.json and the card with `shards` added; other `ballast pool` processes may be finishing
    other shards of the same folder, so the read-modify-write holds a lock."""
    with open(folder / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = {**read_manifest(folder), **header}
        manifest["shards"] = {**manifest["shards"], **shards}
        manifest["records"] = sum(s["records"] for s in manifest["shards"].values())
        write_json(manifest, folder / MANIFEST)
        (folder / CARD).write_text(render_card(manifest), encoding="utf-8")


def _ids_sha256(ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


class PoolIntegrityError(RuntimeError):
    pass


def load_pool(folder: Path) -> list[Record]:
    """Every record of a pool dataset, each shard checked against the sha256 its manifest lists."""
    manifest = read_manifest(folder)
    if not manifest["shards"]:
        raise InputError("no shards listed in the pool's manifest", file=folder / MANIFEST)
    records: list[Record] = []
    for k in sorted(manifest["shards"], key=int):
        entry = manifest["shards"][k]
        path = folder / entry["file"]
        if not path.is_file():
            raise PoolIntegrityError(f"{path}: listed in {MANIFEST} but missing")
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            raise PoolIntegrityError(
                f"{path}: sha256 {actual[:12]}... does not match {MANIFEST} "
                f"({entry['sha256'][:12]}...); the file changed after it was generated"
            )
        records.extend(read_records(path))
    return records


def render_card(manifest: dict) -> str:
    shards = manifest["shards"]
    sources: Counter = Counter()
    for s in shards.values():
        sources.update(s["sources"])
    seconds = sum(s["generate_seconds"] for s in shards.values())
    weak, strong = manifest["models"]["weak"], manifest["models"]["strong"]
    decoding = manifest["decoding"]
    answers = decoding["responses"]
    lines = [
        f"# {manifest['name']}: the pilot's synthetic pool",
        "",
        f"Instructions grown from the {manifest['policy']['company']} human training seeds by ballast's generators",
        f"and answered by the weak model ({weak['name']}, `{weak['package']}`, sha256 `{weak['sha256'][:16]}...`).",
        "It is the pool the scenario's team already has when the next iteration starts: nothing here is curated,",
        f"and the pilot model trains on all of it. Made by `ballast pool` from `{manifest['recipe']}`; the held-out",
        f"human seeds never reached it (their ids' sha256: `{manifest['seeds']['heldout_ids_sha256'][:16]}...`).",
        "",
        f"Records: **{manifest.get('records', 0)}** in {len(shards)} shards ({seconds / 3600:.1f} h of generation).",
        "",
        "| source | records |",
        "| --- | ---: |",
        *[f"| {src} | {n} |" for src, n in sorted(sources.items())],
        "",
        f"Self-Instruct's instructions written by the {decoding['instruction_writer']} model (strong base:",
        f"{strong['name']}). Responses: {decoding['response_mode']} prompts, temperature {answers['temperature']},",
        f"top_p {answers['top_p']}, at most {answers['max_tokens']} tokens.",
        "",
        "Each shard's file, sha256, record count and generation time are in `manifest.json`; every record",
        "carries its generator, template id and hash, decoding and parent seed ids. `ballast pool RECIPE`",
        "regenerates missing shards; a finished shard is never regenerated.",
        "",
    ]
    return "\n".join(lines)
