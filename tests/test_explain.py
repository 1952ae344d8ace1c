"""Token attributions by integrated gradients (`tasks/explain.py`) through every door a user has: the Python API
(`load_model(...).explain`), `steward explain` and the model server's `POST /v1/explain`.

The model is the tiny BERT trained for a few seconds on texts where one word decides the class ("excellent":
pos, "terrible": neg, neither: neutral, among filler words), then registered and promoted; so the word that
decides is known, and must be the one that weighs most."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from core.errors import BadInputError
from core.hashing import ModelFiles, sha256_files
from core.refs import ModelRef
from governance.registry import Registry
from steward import load_model
from steward.cli import main
from steward.server import ServerSettings, create_app
from tasks.classifier import Classifier, collate, encode, new_classifier, save_classifier
from tasks.explain import Explanation, explain
from tasks.modeling import pick_device
from tasks.predict import ModelIdentity, Predictor

LABELS = ["neg", "neutral", "pos"]
CUES = {"neg": "terrible", "pos": "excellent"}
FILLER = ["the", "a", "movie", "film", "phone", "food", "service", "place", "battery", "screen", "price", "staff",
          "story", "cat", "dog", "sat", "mat", "park"]
TOKEN = "explain-token"
TEXTS = ["the cat sat on the mat excellent movie", "terrible phone battery and screen", "the dog ran in the park"]


@dataclass(frozen=True)
class Registered:
    url: str
    folder: Path
    classifier: Classifier


def _example(rng: random.Random) -> tuple[str, str]:
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
    label = rng.choice(LABELS)
    if label in CUES:
        words.insert(rng.randrange(len(words) + 1), CUES[label])
    return " ".join(words), label


def _train_on_cue_words(tiny_model_dir: Path, steps: int = 100) -> Classifier:
    """The tiny BERT fine-tuned until the cue word decides the class (a couple of seconds on a CPU)."""
    device = pick_device()
    torch.manual_seed(0)
    classifier = new_classifier(tiny_model_dir, LABELS, 64, "tiny-bert", device)
    optimizer = torch.optim.AdamW(classifier.model.parameters(), lr=3e-3)
    rng = random.Random(0)
    classifier.model.train()
    for _ in range(steps):
        texts, labels = zip(*(_example(rng) for _ in range(16)), strict=True)
        batch = collate(classifier, encode(classifier, list(texts), list(labels)), device)
        targets = batch.pop("labels")
        loss = torch.nn.functional.cross_entropy(classifier.model(**batch), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    classifier.model.eval()
    return classifier


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Registered:
    """The cue-word classifier saved, registered as `cues` v1 and promoted to champion."""
    root = tmp_path_factory.mktemp("explain")
    classifier = _train_on_cue_words(tiny_model_dir)
    folder = root / "cues-v1"
    save_classifier(classifier, folder)
    url = f"sqlite:///{root / 'registry.db'}"
    with Registry.open(url) as registry:
        run = registry.start_run(kind="retrain", model_name="cues", config={"name": "cues"}, seed=0,
                                 code_version="test", package_versions={})
        registry.register_version(model_name="cues", run_id=run.id, artifact_path=str(folder),
                                  files=sha256_files(folder), base_model="tiny-bert")
        registry.promote("cues", 1, reason="explain tests")
    return Registered(url, folder, classifier)


def _by_token(explanation: Explanation) -> dict[str, float]:
    return dict(zip(explanation.tokens, explanation.attributions, strict=True))


def test_each_token_has_a_weight_and_a_span_of_the_original_text(registered: Registered) -> None:
    model = load_model("cues@champion", registry=registered.url)
    texts = [*TEXTS, "Excellent,  the   FOOD!"]
    explanations = model.explain(texts)
    predictions = model.predict(texts)

    assert [e.text for e in explanations] == texts
    for explanation, prediction in zip(explanations, predictions, strict=True):
        assert len(explanation.tokens) == len(explanation.spans) == len(explanation.attributions) > 0
        for token, (start, end) in zip(explanation.tokens, explanation.spans, strict=True):
            assert 0 <= start < end <= len(explanation.text)
            assert explanation.text[start:end].lower() == token.removeprefix("##")
        # the predicted class, with predict's calibrated probability
        assert explanation.label == prediction.label
        assert explanation.score == pytest.approx(prediction.score, abs=1e-4)
    assert explanations[-1].tokens == ["excellent", ",", "the", "food", "!"]  # no [CLS], [SEP]
    assert model.explain([]) == []
    with pytest.raises(BadInputError, match="takes a list of strings"):
        model.explain("one string")  # type: ignore[arg-type]


def test_the_word_that_decides_the_class_weighs_most(registered: Registered) -> None:
    explanations = explain(registered.classifier, TEXTS[:2], pick_device())
    for explanation, (label, cue) in zip(explanations, [("pos", "excellent"), ("neg", "terrible")], strict=True):
        weights = _by_token(explanation)
        assert explanation.label == label and explanation.score > 0.9
        assert max(weights, key=weights.__getitem__) == cue
        assert weights[cue] > 10 * max(abs(w) for token, w in weights.items() if token != cue)
    # toward another class the same word is the strongest evidence against it
    [against] = explain(registered.classifier, TEXTS[:1], pick_device(), targets=["neg"])
    weights = _by_token(against)
    assert against.label == "neg" and against.score < 0.1
    assert min(weights, key=weights.__getitem__) == "excellent" and weights["excellent"] < 0


def test_attributions_sum_to_the_logit_change_from_the_pad_baseline(registered: Registered) -> None:
    """Completeness: the weights add up to logit(text) − logit(all tokens padded), the delta is what is left."""
    classifier = registered.classifier
    explanations = explain(classifier, TEXTS, pick_device())
    for text, explanation in zip(TEXTS, explanations, strict=True):
        index = LABELS.index(explanation.label)
        change = float(_logits(classifier, text, padded=False)[index] - _logits(classifier, text, padded=True)[index])
        total = sum(explanation.attributions)
        assert total - explanation.delta == pytest.approx(change, abs=1e-3)
        assert abs(explanation.delta) <= 0.02 * abs(total) + 1e-3


def _logits(classifier: Classifier, text: str, padded: bool) -> torch.Tensor:
    """The model's logits for `text`, or for it with every token but [CLS] and [SEP] replaced by [PAD]."""
    batch = collate(classifier, encode(classifier, [text]), pick_device())
    if padded:
        tokenizer = classifier.tokenizer
        special = torch.tensor(tokenizer.get_special_tokens_mask(batch["input_ids"][0].tolist(),
                                                                 already_has_special_tokens=True)).bool()
        batch["input_ids"] = batch["input_ids"].masked_fill(~special.to(batch["input_ids"].device),
                                                            tokenizer.pad_token_id)
    with torch.no_grad():
        return classifier.model(**batch)[0].cpu()


def test_explaining_is_deterministic_and_cuts_texts_as_prediction_does(registered: Registered) -> None:
    classifier = registered.classifier
    first = explain(classifier, TEXTS, pick_device())
    classifier.model.train()  # dropout on: explain must turn it off
    try:
        assert explain(classifier, TEXTS, pick_device()) == first
    finally:
        classifier.model.eval()
    long_text = " ".join(["the cat sat on the mat"] * 40)
    [cut] = explain(classifier, [long_text], pick_device(), steps=8)
    assert len(cut.tokens) == classifier.max_length - 2  # [CLS] and [SEP] take the other two places
    assert cut.spans[-1][1] < len(long_text)


def test_a_bad_target_or_step_count_is_refused(registered: Registered) -> None:
    with pytest.raises(BadInputError, match="unknown target label"):
        explain(registered.classifier, TEXTS[:1], pick_device(), targets=["positive"])
    with pytest.raises(BadInputError, match="1 targets for 2 texts"):
        explain(registered.classifier, TEXTS[:2], pick_device(), targets=["pos"])
    with pytest.raises(BadInputError, match="at least 1"):
        explain(registered.classifier, TEXTS[:1], pick_device(), steps=0)


class _CompressedScorer:
    """Stands in for an ONNX form: it scores, but has no gradients to explain with."""

    form, labels, temperature, max_length = "int8", LABELS, 1.0, 64

    def logits(self, texts: list[str], batch_size: int) -> torch.Tensor:
        return torch.zeros(len(texts), len(LABELS))


def test_a_compressed_form_explains_with_its_fp32_weights_or_says_it_cannot(registered: Registered) -> None:
    identity = ModelIdentity("cues", 1, None, "int8-folder", {}, {}, form="int8")
    fp32 = ModelFiles(registered.folder, sha256_files(registered.folder))
    [explanation] = Predictor(_CompressedScorer(), identity, fp32).explain(TEXTS[:1])
    weights = _by_token(explanation)
    assert explanation.label == "pos" and max(weights, key=weights.__getitem__) == "excellent"
    with pytest.raises(BadInputError, match=r"cues:1 is loaded in its int8 form.*form='fp32'"):
        Predictor(_CompressedScorer(), identity).explain(TEXTS[:1])


def test_steward_explain_json_lists_the_explanations(registered: Registered,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", "--model", "cues@champion", "--text", TEXTS[0], "--text", TEXTS[1], "--json",
                 "--registry", registered.url])
    explanations = json.loads(capsys.readouterr().out)
    assert code == 0 and len(explanations) == 2
    for explanation in explanations:
        assert set(explanation) == {"text", "label", "score", "tokens", "spans", "attributions", "delta"}
        assert len(explanation["tokens"]) == len(explanation["spans"]) == len(explanation["attributions"])
    assert [e["label"] for e in explanations] == ["pos", "neg"]


def test_steward_explain_prints_each_text_with_its_label_score_and_delta(
    registered: Registered, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["explain", "--model", "cues:1", "--text", TEXTS[0], "--registry", registered.url])
    out = capsys.readouterr().out
    assert code == 0
    assert TEXTS[0] in out and "pos (" in out and "cues v1" in out and "convergence delta" in out


@pytest.mark.parametrize(("ref", "message"), [
    ("cues", "is not NAME@ALIAS or NAME:VERSION"),
    ("cues@staging", "has no alias 'staging'"),
])
def test_steward_explain_refuses_a_bad_reference_in_one_line(
    registered: Registered, capsys: pytest.CaptureFixture[str], ref: str, message: str
) -> None:
    code = main(["explain", "--model", ref, "--text", "hello", "--registry", registered.url])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture(scope="module")
def client(registered: Registered) -> Iterator[TestClient]:
    """The model server's app on the registered version, in process."""
    settings = ServerSettings(ModelRef.parse("cues@champion"), registered.url, token=TOKEN)
    predictor = load_model("cues@champion", registry=registered.url)
    with TestClient(create_app(settings, predictor, follow_alias=False)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield test_client


def test_the_server_explains_texts_with_the_version_that_answered(client: TestClient) -> None:
    response = client.post("/v1/explain", json={"texts": TEXTS[:2]})
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == ("cues", 1)
    assert [e["label"] for e in body["explanations"]] == ["pos", "neg"]
    assert body["explanations"][0]["spans"][0] == [0, 3]
    assert 'steward_requests_total{route="/v1/explain",status="200"}' in client.get("/metrics").text


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "not JSON"),
    (b'{"texts": []}', 422, "non-empty list"),
    (b'{"texts": [' + b",".join([b'"x"'] * 257) + b"]}", 422, "over the limit of 256"),
    (b'{"texts": ["' + b"y" * 10_001 + b'"]}', 422, "10,001 characters"),
])
def test_the_server_refuses_what_predict_refuses(client: TestClient, body: bytes, status: int, message: str) -> None:
    response = client.post("/v1/explain", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status and message in response.json()["error"]


def test_the_server_wants_the_token_to_explain(client: TestClient) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        assert client.post("/v1/explain", json={"texts": ["a"]}, headers=headers).status_code == 401
