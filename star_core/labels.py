"""Validation of user label files: raw rows -> :class:`VideoLabels` with a fixed class list.

Pure (no storage): ``star_core.io.labels_import`` reads CSV / JSON Lines / Parquet /
ActivityNet JSON into :class:`RawRow` s and calls :func:`parse_rows`. Every problem is reported
with the row it comes from (``line 7``, ``row 3``, ``video 'x'``) and all problems are collected
before raising, so one run shows everything to fix.

One row per video. Canonical fields (file columns map onto them by name, alias or ``--column``):

- ``video``: a URI/path (its id is the file name without extension) or a bare video id.
- ``labels``: a delimiter-separated string (``"A|B"``), a JSON array string or a list.
- ``split`` (optional): train / val / test (aliases via ``split_map``); empty -> seeded split.
- ``counts`` (optional): instances per label, for RAM: ``"A:2|B:1"``, ``"2|1"`` (aligned with
  the labels as written), a mapping or a list.
- ``intervals`` (optional, evaluation only): ``"A:12.5-18|B:30-41.2"``, or a list of
  ``{label, start, end}`` / ``{label, segment: [s, e]}`` / ``[label, start, end]``.
- ``duration_s`` (optional): the video's duration in seconds (checks intervals).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from star_core.data import SPLIT_ALIASES, SPLIT_NAMES, Instance, VideoLabels

REQUIRED = ("video", "labels")
# canonical field -> accepted column names, first is the canonical one
ALIASES: dict[str, tuple[str, ...]] = {
    "video": ("video", "video_id", "video_uri", "uri", "path", "file"),
    "labels": ("labels", "label", "classes", "actions"),
    "split": ("split", "subset"),
    "counts": ("counts", "label_counts", "instance_counts"),
    "intervals": ("intervals", "instances", "segments", "annotations"),
    "duration_s": ("duration_s", "duration"),
}
MAX_REPORTED = 50  # problems listed in one error message


class LabelsError(ValueError):
    """A label file has problems; ``problems`` lists each as ``'<where>: <what>'``."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:MAX_REPORTED])
        more = f"\n  ... and {len(self.problems) - MAX_REPORTED} more" if len(self.problems) > MAX_REPORTED else ""
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{source}: {len(self.problems)} {noun}:\n  {shown}{more}")


@dataclass(frozen=True)
class RawRow:
    """One record as read from a file: where it is (for errors) and its values by column name."""

    where: str  # "line 7", "row 3", "video 'abc'"
    values: Mapping[str, Any]


@dataclass(frozen=True)
class ImportOptions:
    """How rows become labels."""

    label_delimiter: str = "|"  # separates labels (and counts/intervals items) in a string cell
    test_fraction: float = 0.2  # share of rows without a split that go to "test"
    seed: int = 0  # seeds the split of rows without one
    split_map: Mapping[str, str] = field(default_factory=lambda: dict(SPLIT_ALIASES))  # file value -> split
    classes: tuple[str, ...] | None = None  # fixed class list (its order is kept); None: sorted union
    duration_tolerance_s: float = 0.5  # an interval may end this far past the video's duration
    skip_invalid: bool = False  # drop rows with problems (listed) instead of failing


@dataclass
class ParsedLabels:
    """Result of :func:`parse_rows`."""

    classes: tuple[str, ...]
    videos: list[VideoLabels]  # sorted by video_id
    skipped: list[str] = field(default_factory=list)  # problems of rows dropped with skip_invalid
    warnings: list[str] = field(default_factory=list)


# ----- columns ---------------------------------------------------------------------------------
def _closest(name: str, candidates: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=1, cutoff=0.6)
    return next(c for c in candidates if c.lower() == close[0]) if close else None


def _suggest(name: str, candidates: Sequence[str]) -> str:
    close = _closest(name, candidates)
    return f" (did you mean {close!r}?)" if close else ""


def resolve_columns(
    columns: Mapping[str, str], mapping: Mapping[str, str] | None = None, ignore: Sequence[str] = (), source: str = "labels file"
) -> dict[str, str]:
    """Decide which file column feeds each canonical field.

    Args:
        columns: file column name -> where it first appears ("header", "line 4").
        mapping: explicit canonical field -> file column (``--column video=path``).
        ignore: file columns to leave unread.
        source: the file, for messages.

    Returns:
        canonical field -> file column, for the fields present.

    Raises:
        LabelsError: an unknown or misspelled column (with the close match), an ambiguous pair of
            aliases, a mapping to a column the file lacks, or a missing required column.
    """
    problems: list[str] = []
    chosen: dict[str, str] = {}
    all_names = [a for names in ALIASES.values() for a in names]
    for canonical, column in (mapping or {}).items():
        if canonical not in ALIASES:
            problems.append(
                f"--column {canonical}={column}: unknown field {canonical!r}{_suggest(canonical, list(ALIASES))}; fields: "
                f"{', '.join(ALIASES)}"
            )
        elif column not in columns:
            problems.append(
                f"--column {canonical}={column}: the file has no column {column!r}{_suggest(column, list(columns))}; columns: "
                f"{', '.join(columns)}"
            )
        else:
            chosen[canonical] = column
    used = set(chosen.values())
    for canonical, names in ALIASES.items():
        if canonical in chosen:
            continue
        present = [n for n in names if n in columns and n not in used and n not in ignore]
        if len(present) > 1:
            problems.append(
                f"columns {present[0]!r} and {present[1]!r} both name the {canonical}: choose one with --column {canonical}=NAME or "
                "--ignore-column"
            )
        elif present:
            chosen[canonical] = present[0]
            used.add(present[0])
    suggested: set[str] = set()  # fields an unknown column was probably meant to feed
    for column, where in columns.items():
        if column in used or column in ignore:
            continue
        if column in all_names:  # an alias of a field that another column already feeds
            problems.append(
                f"{where}: column {column!r} duplicates the field fed by another column; drop it or use --ignore-column {column}"
            )
            continue
        close = _closest(column, all_names)
        hint = f" (did you mean {close!r}?)" if close else ""
        suggested.update(f for f, names in ALIASES.items() if close in names)
        problems.append(
            f"{where}: unknown column {column!r}{hint}; known: {', '.join(ALIASES)} (map with --column FIELD=COLUMN, skip with "
            "--ignore-column)"
        )
    for canonical in REQUIRED:
        if canonical not in chosen and canonical not in suggested and canonical not in (mapping or {}):
            problems.append(f"missing required column {canonical!r} (accepted names: {', '.join(ALIASES[canonical])})")
    if problems:
        raise LabelsError(source, problems)
    return chosen


# ----- cell parsers (each raises ValueError with a message naming the value) ----------------
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"cannot parse {value!r} as JSON: {exc.msg}") from None
    return value


# A cell starting with one of these runs as a formula when a CSV export is opened in a
# spreadsheet (CSV injection); labels and video ids end up in such exports (`star query --format csv`).
FORMULA_PREFIXES = ("=", "+", "-", "@")
VIDEO_ID_FORMULA_PREFIXES = ("=", "+", "@")  # not "-": YouTube ids may start with it
# Characters that usually separate several labels; a label holding one (other than the delimiter
# in use) is imported as one class but warned about.
LIKELY_SEPARATORS = (";", ",", "|")


def check_video_id(video_id: str) -> str:
    """``video_id`` if it can name a video in the lake; raises ValueError naming the problem."""
    if video_id in (".", ".."):
        raise ValueError(f"video id {video_id!r} is not allowed (it names a directory, not a video)")
    if video_id.startswith(VIDEO_ID_FORMULA_PREFIXES) or any(c in video_id for c in "\t\r\n"):
        raise ValueError(
            f"video id {video_id!r} starts with {video_id[0]!r} or holds a control character: spreadsheets run such cells as a formula"
        )
    return video_id


def _check_label(label: str) -> None:
    if label.startswith(FORMULA_PREFIXES) or any(c in label for c in "\t\r\n"):
        raise ValueError(
            f"label {label!r} starts with {label[0]!r} or holds a control character: spreadsheets run such cells as a formula; rename it"
        )


def _split_items(text: str, delimiter: str) -> list[str]:
    return [item.strip() for item in text.split(delimiter)]


def parse_labels_cell(value: Any, delimiter: str) -> list[str]:
    """Labels as written (order kept); raises ValueError on empty labels or duplicates."""
    value = _maybe_json(value)
    if _missing(value):
        raise ValueError("empty labels: every video needs at least one label")
    if isinstance(value, str):
        items = _split_items(value, delimiter)
    elif isinstance(value, (list, tuple)):
        items = [str(v).strip() if v is not None else "" for v in value]
    else:
        raise ValueError(f"labels must be a {delimiter!r}-separated string or a list, got {type(value).__name__} {value!r}")
    if not items:
        raise ValueError("empty labels: every video needs at least one label")
    if any(not item for item in items):
        raise ValueError(f"empty label in {value!r} (doubled or trailing {delimiter!r}?)")
    dups = sorted({i for i in items if items.count(i) > 1})
    if dups:
        raise ValueError(f"label {dups[0]!r} listed more than once; give instance counts in the counts column instead")
    for item in items:
        _check_label(item)
    return items


def _count(value: Any, label: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"count {value!r} for {label!r} is not a number") from None
    if not number.is_integer() or number < 1:
        raise ValueError(f"count {value!r} for {label!r} must be a whole number >= 1")
    return int(number)


def parse_counts_cell(value: Any, labels: Sequence[str], delimiter: str) -> dict[str, int] | None:
    """Counts per label (None when the cell is empty); must name exactly the row's labels."""
    value = _maybe_json(value)
    if _missing(value):
        return None
    if isinstance(value, str):
        items = _split_items(value, delimiter)
        if all(":" in item for item in items):
            pairs = [item.rsplit(":", 1) for item in items]
            value = {}
            for name, number in pairs:
                name = name.strip()
                if name in value:
                    raise ValueError(f"counts name {name!r} twice")
                value[name] = number
        elif any(":" in item for item in items):
            raise ValueError(f"counts {value!r} mix 'label:n' and bare numbers")
        else:
            value = items
    if isinstance(value, Mapping):
        counts = {str(k).strip(): v for k, v in value.items()}
        extra = [k for k in counts if k not in labels]
        lacking = [lab for lab in labels if lab not in counts]
        if extra:
            raise ValueError(f"counts name {extra[0]!r}, which is not among the labels {list(labels)}{_suggest(extra[0], list(labels))}")
        if lacking:
            raise ValueError(f"counts give no number for label {lacking[0]!r} (labels {', '.join(labels)}; counts for {', '.join(counts)})")
        return {lab: _count(counts[lab], lab) for lab in labels}
    if isinstance(value, (list, tuple)):
        if len(value) != len(labels):
            raise ValueError(f"{len(value)} count(s) ({', '.join(map(str, value))}) for {len(labels)} labels ({', '.join(labels)})")
        return {lab: _count(n, lab) for lab, n in zip(labels, value)}
    raise ValueError(f"counts must be 'A:2{delimiter}B:1', a list or a mapping, got {type(value).__name__} {value!r}")


def _float(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} {value!r} is not finite")
    return number


_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_SPAN = re.compile(rf"^\s*{_NUMBER}\s*-\s*{_NUMBER}\s*$")  # "12.5-18", "-1-2" (a negative start)


def _interval_item(item: Any) -> tuple[str, Any, Any]:
    if isinstance(item, Mapping):
        label = item.get("label")
        if "segment" in item:
            seg = item["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise ValueError(f"interval {dict(item)}: 'segment' must be [start, end]")
            start, end = seg
        else:
            start = next((item[k] for k in ("t_start_s", "start_s", "start") if k in item), None)
            end = next((item[k] for k in ("t_end_s", "end_s", "end") if k in item), None)
        if label is None or start is None or end is None:
            raise ValueError(f"interval {dict(item)} needs label, start and end (or label and segment)")
        return str(label).strip(), start, end
    if isinstance(item, (list, tuple)) and len(item) == 3:
        return str(item[0]).strip(), item[1], item[2]
    if isinstance(item, str) and ":" in item:
        label, _, span = item.rpartition(":")
        match = _SPAN.match(span)
        if not match:
            raise ValueError(f"interval {item!r} must look like 'label:start-end' (seconds)")
        return label.strip(), match.group(1), match.group(2)
    raise ValueError(f"interval {item!r} must be 'label:start-end', [label, start, end] or {{label, start, end}}")


def parse_intervals_cell(value: Any, delimiter: str) -> list[Instance]:
    """Ground-truth intervals in seconds; raises ValueError on start >= end or negative times."""
    value = _maybe_json(value)
    if _missing(value):
        return []
    items = _split_items(value, delimiter) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"intervals must be a list or a {delimiter!r}-separated string, got {type(value).__name__}")
    out = []
    for item in items:
        label, start, end = _interval_item(item)
        start_s, end_s = _float(start, f"start of {label!r} interval"), _float(end, f"end of {label!r} interval")
        if start_s < 0:
            raise ValueError(f"interval {label}:{start_s:g}-{end_s:g} starts before 0 s")
        if start_s >= end_s:
            raise ValueError(f"interval {label}:{start_s:g}-{end_s:g} has start >= end")
        out.append(Instance(label, start_s, end_s))
    return out


def parse_split_cell(value: Any, split_map: Mapping[str, str]) -> str | None:
    if _missing(value):
        return None
    key = str(value).strip().lower()
    if key in split_map:
        return split_map[key]
    raise ValueError(
        f"unknown split {value!r}{_suggest(key, list(split_map))}; use one of {', '.join(SPLIT_NAMES)} (or --split-map VALUE=SPLIT)"
    )


# ----- splits ----------------------------------------------------------------------------------
def _unit_hash(seed: int, video_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(video_ids: Sequence[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Seeded train/test split of ``video_ids``, stable per video.

    A video goes to test when a hash of (seed, video_id) falls below ``test_fraction``, so adding
    videos never moves an existing one between splits. When that leaves the test split empty
    although ``test_fraction > 0`` and there are at least two videos, the lowest-hash video is
    moved to test, so a tiny dataset still has something to evaluate on.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    scores = {vid: _unit_hash(seed, vid) for vid in video_ids}
    out = {vid: ("test" if h < test_fraction else "train") for vid, h in scores.items()}
    if test_fraction > 0 and len(out) >= 2 and "test" not in out.values():
        out[min(scores, key=scores.get)] = "test"
    return out


# ----- rows -> labels --------------------------------------------------------------------------
@dataclass
class _Row:
    where: str
    video_id: str
    source_uri: str | None
    labels: list[str]
    counts: dict[str, int] | None
    instances: list[Instance]
    split: str | None
    duration_s: float | None


def _parse_row(
    raw: RawRow, columns: Mapping[str, str], opts: ImportOptions, resolve_video: Callable[[str], tuple[str, str | None]]
) -> _Row:
    """Parse one row; raises ValueError listing the first problem of each field (joined by '; ')."""
    vals = {field_: raw.values.get(column) for field_, column in columns.items()}
    errors: list[str] = []
    video_id = source_uri = None
    if _missing(vals.get("video")):
        errors.append("empty video")
    else:
        try:
            video_id, source_uri = resolve_video(str(vals["video"]).strip())
            check_video_id(video_id)
        except ValueError as exc:
            errors.append(str(exc))
    labels: list[str] = []
    try:
        labels = parse_labels_cell(vals.get("labels"), opts.label_delimiter)
    except ValueError as exc:
        errors.append(str(exc))
    if opts.classes is not None:
        for lab in labels:
            if lab not in opts.classes:
                errors.append(f"label {lab!r} is not in the class list{_suggest(lab, list(opts.classes))}")
    counts = None
    if labels and "counts" in vals:
        try:
            counts = parse_counts_cell(vals["counts"], labels, opts.label_delimiter)
        except ValueError as exc:
            errors.append(str(exc))
    instances: list[Instance] = []
    if "intervals" in vals:
        try:
            instances = parse_intervals_cell(vals["intervals"], opts.label_delimiter)
        except ValueError as exc:
            errors.append(str(exc))
        for inst in instances:
            if labels and inst.label not in labels:
                errors.append(f"interval label {inst.label!r} is not among the video's labels {labels}{_suggest(inst.label, labels)}")
    split = None
    try:
        split = parse_split_cell(vals.get("split"), opts.split_map)
    except ValueError as exc:
        errors.append(str(exc))
    duration_s = None
    if not _missing(vals.get("duration_s")):
        try:
            duration_s = _float(vals["duration_s"], "duration")
            if duration_s <= 0:
                errors.append(f"duration {duration_s:g} s must be > 0")
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ValueError("; ".join(errors))
    return _Row(raw.where, video_id, source_uri, labels, counts, instances, split, duration_s)


def _separator_warnings(rows: Sequence[_Row], delimiter: str) -> list[str]:
    """One warning per distinct label that holds a likely separator other than ``delimiter``."""
    out, seen = [], set()
    for row in rows:
        for label in row.labels:
            sep = next((c for c in LIKELY_SEPARATORS if c != delimiter and c in label), None)
            if sep is not None and label not in seen:
                seen.add(label)
                out.append(f"label {label!r} ({row.where}) holds {sep!r}, a likely separator: it is one class; if the cell lists "
                           f"several labels, import with --label-delimiter {sep!r}")
    return out


def parse_rows(
    rows: Sequence[RawRow],
    columns: Mapping[str, str],
    opts: ImportOptions,
    resolve_video: Callable[[str], tuple[str, str | None]],
    durations_s: Mapping[str, float] | None = None,
    source: str = "labels file",
) -> ParsedLabels:
    """Validate rows and build the dataset's videos and class list.

    Args:
        rows: the file's records, in file order.
        columns: canonical field -> column (from :func:`resolve_columns`).
        opts: delimiter, split, class list and tolerance settings.
        resolve_video: maps a ``video`` cell to ``(video_id, source_uri | None)``.
        durations_s: decoded durations of videos that have features; they take precedence over
            a ``duration_s`` column when checking intervals (a declared duration that differs by
            more than 1 s is a warning).
        source: the file, for messages.

    Returns:
        :class:`ParsedLabels`; labels within a video follow the class order (counts aligned), so
        reordering a file's cells does not change the dataset's content.

    Raises:
        LabelsError: every problem, each prefixed with its row (unless ``opts.skip_invalid``).
    """
    durations_s = durations_s or {}
    problems: list[str] = []
    bad_rows: set[str] = set()
    parsed: list[_Row] = []
    first_seen: dict[str, str] = {}
    if not rows:
        raise LabelsError(source, ["no rows: the file holds no videos"])
    order_of = {raw.where: i for i, raw in enumerate(rows)}
    for raw in rows:
        errors = []
        try:  # duplicates are found even in rows with other problems
            video_id = (
                resolve_video(str(raw.values.get(columns["video"])).strip())[0] if not _missing(raw.values.get(columns["video"])) else None
            )
        except ValueError:
            video_id = None
        if video_id is not None and video_id in first_seen:
            errors.append(f"duplicate video {video_id!r} (first on {first_seen[video_id]})")
        elif video_id is not None:
            first_seen[video_id] = raw.where
        try:
            row = _parse_row(raw, columns, opts, resolve_video)
        except ValueError as exc:
            errors.append(str(exc))
        if errors:
            problems.append(f"{raw.where}: {'; '.join(errors)}")
            bad_rows.add(raw.where)
            continue
        parsed.append(row)
    warnings: list[str] = []
    kept: list[_Row] = []
    for row in parsed:
        declared, decoded = row.duration_s, durations_s.get(row.video_id)
        if declared is not None and decoded is not None and abs(declared - decoded) > 1.0:
            warnings.append(
                f"{row.where}: video {row.video_id!r} declares duration {declared:.2f} s but its decoded features span {decoded:.2f} s; "
                f"using {decoded:.2f} s"
            )
        duration = decoded if decoded is not None else declared
        late = [i for i in row.instances if duration is not None and i.t_end_s > duration + opts.duration_tolerance_s]
        if late:
            problems.append(
                f"{row.where}: {len(late)} interval(s) end past the video's duration {duration:.2f} s, e.g. "
                f"{late[0].label}:{late[0].t_start_s:g}-{late[0].t_end_s:g}"
            )
            bad_rows.add(row.where)
            continue
        row.duration_s = duration
        kept.append(row)
    problems.sort(key=lambda p: order_of.get(p.split(": ", 1)[0], len(order_of)))
    warnings += _separator_warnings(kept, opts.label_delimiter)
    if problems and not opts.skip_invalid:
        raise LabelsError(source, problems)
    if not kept:
        raise LabelsError(source, problems + ["no valid rows left"])
    if opts.classes is not None:
        classes = tuple(opts.classes)
        unused = [c for c in classes if not any(c in r.labels for r in kept)]
        if unused:
            warnings.append(f"classes without any video: {unused}")
    else:
        classes = tuple(sorted({lab for r in kept for lab in r.labels}))
    order = {c: i for i, c in enumerate(classes)}
    unsplit = [r.video_id for r in kept if r.split is None]
    seeded = assign_splits(unsplit, opts.test_fraction, opts.seed) if unsplit else {}
    videos = []
    for r in sorted(kept, key=lambda r: r.video_id):
        labels = sorted(r.labels, key=order.__getitem__)
        videos.append(
            VideoLabels(
                video_id=r.video_id,
                split=r.split or seeded[r.video_id],
                labels=tuple(labels),
                counts=None if r.counts is None else tuple(r.counts[lab] for lab in labels),
                instances=tuple(sorted(r.instances, key=lambda i: (i.t_start_s, i.t_end_s, i.label))),
                duration_s=r.duration_s,
                source_uri=r.source_uri,
            )
        )
    return ParsedLabels(classes=classes, videos=videos, skipped=problems, warnings=warnings)
