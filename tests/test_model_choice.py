"""``RAGSVC_LLM_MODEL`` set to a Hugging Face model id: the in-process engine loads the model by its id.

A first start downloads the id from the Hugging Face Hub; these test machines have no network but
PyPI, so the download itself is not exercised. What runs is everything after it: the id is found in
a Hugging Face cache laid out as a download leaves it (``HF_HOME``, ``HF_HUB_OFFLINE=1``), vLLM
loads it by id, the tokenizer comes from the engine (there is no local folder of that name), and the
answer is generated, cited and named after the id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import start_service, stop_service
from tests.docmaker import FACT_PAGES, make_pdf

MODEL_ID = "ragsvc-test/SmolLM2-135M-Instruct"


def hub_cache(home: Path, repo_id: str, folder: Path) -> None:
    """``HF_HOME/hub/models--org--name/{refs/main, snapshots/REV/*}``, as ``snapshot_download`` writes it."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():  # the hub links snapshot files to blobs; links to the files read the same
        (snapshot / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


@pytest.fixture(scope="module")
def by_id(tmp_path_factory):
    from ragsvc.local_models import ensure_smollm2
    from ragsvc.settings import Settings

    tmp = tmp_path_factory.mktemp("model-id")
    hub_cache(tmp / "hf", MODEL_ID, ensure_smollm2(Settings().cache_dir))
    svc = start_service(tmp, None, "sqlite", extra_env={"HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1",
                                                        "RAGSVC_LLM_MODEL": MODEL_ID})
    yield svc
    stop_service(svc)


def test_a_model_id_is_loaded_and_answers(by_id):
    assert by_id.client.get("/ready").json()["checks"]["engine"] == "ok"
    doc = by_id.upload([("harbour-facts.pdf", make_pdf(FACT_PAGES), "application/pdf")]).json()["documents"][0]
    assert by_id.wait_done(doc["id"])["status"] == "ready"
    body = by_id.client.post("/v1/ask", json={"question": "What color is the Quintaro bridge?"}).json()
    assert body["model"] == MODEL_ID and body["answered"], body
    assert body["usage"]["completion_tokens"] > 0
    assert any(c["page"] == 2 and "orange" in c["text"] for c in body["citations"]), body
