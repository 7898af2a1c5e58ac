"""The spacy-llm task and models: local decoding, and HTTP against real servers started on 127.0.0.1.

The completions server answers from the tiny memorising model (greedy decoding, stop sequences,
logprobs) like vLLM or llama.cpp would; other servers answer HTTP 500, garbage, or nothing at all.
"""

import json
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import spacy
from spacy_llm.util import assemble

import tiny
from spacy_padellm.llm.openai import CompletionsAPIError, CompletionsTimeout, OpenAICompletionsPaDeLLM
from spacy_padellm.llm.task import PaDeLLMResponse, make_padellm_task

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TEXTS = [t for t, _ in tiny.SENTENCES]


def gold(data):
    return [[(text[s:e], label) for s, e, label in tiny.char_spans(text, mentions)] for text, mentions in data]


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


examples = tiny.gold_examples  # predicted docs without entities, references with the gold ones


def local_nlp(tiny_model, task=None, model=None, **llm):
    nlp = spacy.blank("en")
    nlp.add_pipe("llm", config={
        "task": {"@llm_tasks": "spacy_padellm.NER.v1", "labels": tiny.LABELS, **(task or {})},
        "model": {"@llm_models": "spacy_padellm.Local.v1", "model": str(tiny_model), **(model or {})},
        **llm,
    })
    return nlp


# --- HTTP servers --------------------------------------------------------------------------------


class Recorder:
    """What a test server saw: request bodies, and the most requests it held at once."""

    def __init__(self):
        self.bodies = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends stalled requests


@contextmanager
def serve(answer):
    """A threaded HTTP server on 127.0.0.1 (port 0); ``answer(body, recorder) -> (status, bytes)``."""
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            with rec.lock:
                rec.bodies.append(body)
                rec.in_flight += 1
                rec.max_in_flight = max(rec.max_in_flight, rec.in_flight)
            try:
                status, payload = answer(body, rec)
            finally:
                with rec.lock:
                    rec.in_flight -= 1
            if status is None:  # stalled: the client gave up and closed the connection
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()


class TinyCompletions:
    """The OpenAI completions API over the tiny model: greedy decoding, ``stop``, EOS, ``logprobs``."""

    def __init__(self, model_dir):
        from spacy_padellm.loading import load_model, resolve_model
        from spacy_padellm.text.protocol import PromptEncoder

        self.model, self.tok = load_model(resolve_model(str(model_dir)))
        self.bos = PromptEncoder(self.tok).bos_ids
        self.lock = threading.Lock()

    def generate(self, prompt, max_tokens, stop):
        import torch

        ids = self.bos + list(self.tok(prompt, add_special_tokens=False)["input_ids"])
        out, logprobs = [], []
        with self.lock, torch.inference_mode():
            for _ in range(max_tokens):
                logits = self.model(input_ids=torch.tensor([ids + out])).logits[0, -1].float()
                logp = torch.log_softmax(logits, dim=-1)
                token = int(logp.argmax())
                if token == self.tok.eos_token_id:
                    return self.tok.decode(out), "stop", logprobs
                out.append(token)
                logprobs.append(float(logp[token]))
                text = self.tok.decode(out)
                hits = [text.index(s) for s in stop if s in text]
                if hits:
                    return text[:min(hits)], "stop", logprobs[:-1]
        return self.tok.decode(out), "length", logprobs

    def __call__(self, body, rec):
        time.sleep(0.01)  # lets concurrent requests overlap visibly
        text, finish, logprobs = self.generate(body["prompt"], body["max_tokens"], body.get("stop") or [])
        choice = {"index": 0, "text": text, "finish_reason": finish,
                  "logprobs": {"token_logprobs": logprobs} if body.get("logprobs") else None}
        return 200, json.dumps({"id": "cmpl-tiny", "object": "text_completion", "model": body["model"],
                                "choices": [choice]}).encode()


@pytest.fixture(scope="module")
def completions(tiny_model):
    return TinyCompletions(tiny_model)


def http_model(url, **kwargs):
    defaults = {"name": "tiny", "api_base": url, "concurrency": 4, "timeout": 5.0, "max_tries": 3, "interval": 0.01}
    return OpenAICompletionsPaDeLLM(**{**defaults, **kwargs})


def run_http(model, labels=("PER",), text="Peter Blackburn met Jordan in Amman ."):
    task = make_padellm_task(labels=list(labels))
    (prompts, _), = task.generate_prompts([spacy.blank("en").make_doc(text)])
    return model([prompts])


# --- registration ---------------------------------------------------------------------------


def test_registered_names_resolve_through_entry_points():
    code = (
        "import spacy_llm; from spacy.util import registry; "
        "print(registry.llm_tasks.get('spacy_padellm.NER.v1').__name__, "
        "registry.llm_models.get('spacy_padellm.Local.v1').__name__, "
        "registry.llm_models.get('spacy_padellm.OpenAICompletions.v1').__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["make_padellm_task", "make_local_model", "make_openai_completions_model"]


# --- local backend ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nlp_local(tiny_model):
    return assemble(CONFIGS / "llm_local.cfg", overrides={"paths.model": str(tiny_model)})


def test_local_options_are_checked_by_the_config(tiny_model):
    from confection import ConfigValidationError
    from spacy.util import registry

    def build(**options):
        return registry.resolve({"m": {"@llm_models": "spacy_padellm.Local.v1", "model": str(tiny_model),
                                       **options}})["m"]

    model = build(max_count=7, device="cpu", context_length=None)
    assert (model.max_count, model.device, model.context_length, model.max_batch_rows) == (7, "cpu", None, 256)
    with pytest.raises(ConfigValidationError, match="max_cout"):
        build(max_cout=7)
    with pytest.raises(ConfigValidationError, match="max_count"):
        build(max_count="many")
    with pytest.raises(ValueError, match="'max_batch_rows' must be a positive integer, got 0"):
        build(max_batch_rows=0)


def test_local_backend_exact_entities(nlp_local):
    docs = list(nlp_local.pipe(TEXTS))
    assert [ents(d) for d in docs] == gold(tiny.SENTENCES)
    assert all(0.0 < e._.padellm_prob <= 1.0 for d in docs for e in d.ents)
    assert docs[0]._.padellm["windows"] == 1 and docs[0]._.padellm["not_found"] == 0


def test_local_backend_nlp_evaluate(nlp_local):
    scores = nlp_local.evaluate(examples(nlp_local))
    assert scores["ents_f"] == 1.0
    assert set(scores["ents_per_type"]) == set(tiny.LABELS)


def test_empty_docs_and_save_io(tiny_model):
    nlp = local_nlp(tiny_model, save_io=True)
    docs = list(nlp.pipe(["", "  ", TEXTS[0]]))
    assert [ents(d) for d in docs] == [[], [], gold(tiny.SENTENCES)[0]]
    io = docs[2].user_data["llm_io"]["llm"]
    assert json.loads(io["prompt"][0])["labels"] == tiny.LABELS
    assert json.loads(io["response"][0])["counts"] == {"PER": 0, "LOC": 2, "ORG": 0, "MISC": 1}


def test_long_doc_is_sharded_by_sentence_and_fused(tiny_model):
    nlp = local_nlp(tiny_model, model={"context_length": 20})
    text = " ".join(TEXTS)
    doc = nlp(text)
    assert doc.text == text
    assert doc._.padellm["windows"] > 1
    assert ents(doc) == [pair for sent in gold(tiny.SENTENCES) for pair in sent]


def test_shards_hold_window_sentences_sentences(tiny_model):
    """One sentence a shard by default, as the component's windows, whatever the context length; null packs
    sentences up to the context length. The tiny model memorised its sentences alone: one a shard, it finds
    their entities in the joined text."""
    text = " ".join(TEXTS)
    n_sents = len(TEXTS)  # each ends with " ."
    for task, windows in (({}, n_sents), ({"window_sentences": 2}, (n_sents + 1) // 2), ({"window_sentences": None}, 1)):
        nlp = local_nlp(tiny_model, task=task, model={"context_length": 10_000})
        doc = nlp(text)
        assert doc.text == text and doc._.padellm["windows"] == windows, task
        if not task:
            assert ents(doc) == [pair for sent in gold(tiny.SENTENCES) for pair in sent]
    assert make_padellm_task(window_sentences=None).get_cfg()["window_sentences"] is None
    with pytest.raises(ValueError, match="'window_sentences' must be null or a positive integer, got 0"):
        make_padellm_task(window_sentences=0)


def test_nested_mode_writes_span_group(tiny_model):
    nlp = local_nlp(tiny_model, task={"spans_key": "sc"})
    doc = nlp(TEXTS[1])
    assert sorted((s.start_char, s.end_char, s.label_) for s in doc.spans["sc"]) == \
        sorted(tiny.char_spans(TEXTS[1], tiny.SENTENCES[1][1]))
    assert doc.spans["sc"].attrs["scores"] == [s._.padellm_prob for s in doc.spans["sc"]]
    assert nlp.evaluate(examples(nlp, spans_key="sc"))["spans_sc_f"] == 1.0


def test_tokens_text_format(tiny_model):
    nlp = local_nlp(tiny_model, task={"text_format": "tokens"})
    doc = nlp("Japan beat  Syria in the\nAsian Cup .")
    assert ents(doc) == [("Japan", "LOC"), ("Syria", "LOC"), ("Asian Cup", "MISC")]


def test_local_warns_about_prompts_the_model_was_not_tuned_for(tiny_model):
    nlp = local_nlp(tiny_model, task={"description": "Find entities.", "label_definitions": {"PER": "person"}})
    with pytest.warns(UserWarning) as record:
        nlp(TEXTS[0])
    messages = " ".join(str(w.message) for w in record)
    assert "['person'] were not in the model's training labels" in messages
    assert "prompt template" in messages


def test_cache_skips_the_model(tiny_model, tmp_path):
    cache = {"@llm_misc": "spacy.BatchCache.v1", "path": str(tmp_path / "cache"), "batch_size": 3,
             "max_batches_in_mem": 4}
    first = local_nlp(tiny_model, cache=cache)
    expected = [ents(d) for d in first.pipe(TEXTS)]
    assert first.get_pipe("llm")._model.stats["prompts"] == len(TEXTS)
    second = local_nlp(tiny_model, cache=cache)
    docs = list(second.pipe(TEXTS))
    assert second.get_pipe("llm")._model.stats["prompts"] == 0
    assert [ents(d) for d in docs] == expected == gold(tiny.SENTENCES)
    assert all(e._.padellm_prob is not None for d in docs for e in d.ents)
    changed = dict(cache)
    with pytest.raises(ValueError, match="prompt template"):
        local_nlp(tiny_model, task={"label_definitions": {"PER": "person"}}, cache=changed)


def test_save_and_load_pipeline(nlp_local, tmp_path):
    nlp_local.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.get_pipe("llm").labels == tuple(tiny.LABELS)
    assert [ents(d) for d in loaded.pipe(TEXTS[:2])] == gold(tiny.SENTENCES[:2])


# --- the task on its own ----------------------------------------------------------------------


def test_label_definitions_and_description_shape_the_prompts():
    task = make_padellm_task(labels="PER, LOC", label_definitions={"PER": "person"},
                             description="Find {named} entities.")
    assert task.labels == ("PER", "LOC")
    assert task.add_label("ORG", "organisation") == 1 and task.add_label("ORG") == 0
    (prompts, _), = task.generate_prompts([spacy.blank("en").make_doc("Bonn .")])
    prompt = prompts[0]
    assert prompt.labels == ("PER", "LOC", "ORG")
    assert prompt.count_prompt(0) == "Find {named} entities.\n\ntext:\nBonn .\nentity type:\nperson\n\n<num>"
    assert prompt.mention_prompt(2, 2, 1).endswith("organisation\n\n<num>2\n<mention 1>")
    with pytest.raises(ValueError, match="same prompt"):
        task.add_label("LOC2", "person")


def test_initialize_takes_labels_from_examples(tiny_model):
    nlp = local_nlp(tiny_model, task={"labels": []})
    nlp.initialize(lambda: examples(nlp, tiny.SENTENCES[:2]))
    assert nlp.get_pipe("llm").labels == ("LOC", "MISC", "PER")


def test_responses_must_come_from_a_padellm_model():
    task = make_padellm_task(labels=["PER"])
    doc = spacy.blank("en")("Peter .")
    with pytest.raises(TypeError, match="PaDeLLMResponse"):
        list(task.parse_responses([[doc]], [["PER: Peter"]]))
    assert list(task.parse_responses([[doc]], [[PaDeLLMResponse(mentions=[("PER", 1, "Peter", 0.9)])]]))[0].ents


# --- HTTP backend -----------------------------------------------------------------------------


def test_http_backend_same_entities(completions):
    with serve(completions) as (url, rec):
        nlp = assemble(CONFIGS / "llm_openai.cfg", overrides={
            "components.llm.model.api_base": url, "components.llm.model.name": "tiny",
            "components.llm.model.concurrency": 4})
        docs = list(nlp.pipe(TEXTS))
        assert [ents(d) for d in docs] == gold(tiny.SENTENCES)
        assert all(0.0 < e._.padellm_prob <= 1.0 for d in docs for e in d.ents)
        assert any(e._.padellm_prob < 1.0 for d in docs for e in d.ents)  # from the server's logprobs
        n_counts = len(TEXTS) * len(tiny.LABELS)
        n_mentions = sum(len(m) for _, m in tiny.SENTENCES)
        kinds = ["count" if b["prompt"].endswith("<num>") else "mention" for b in rec.bodies]
        assert kinds == ["count"] * n_counts + ["mention"] * n_mentions  # round 1, then round 2
        assert rec.max_in_flight > 1  # requests were concurrent
        assert rec.max_in_flight <= 4  # ... within the bound
        # Requests are concurrent, so their arrival order within a round is not fixed.
        assert all(b["model"] == "tiny" and b["stop"] == ["\n"] and b["temperature"] == 0.0 for b in rec.bodies)
        assert "text:\n" + TEXTS[0] + "\nentity type:\nPER\n\n<num>" in [b["prompt"] for b in rec.bodies]
        assert "text:\n" + TEXTS[0] + "\nentity type:\nLOC\n\n<num>2\n<mention 2>" in \
            [b["prompt"] for b in rec.bodies]
        assert nlp.evaluate(examples(nlp))["ents_f"] == 1.0


@pytest.mark.parametrize("mode,message", [
    ("500", "HTTP 500"),
    ("text", "not JSON"),
    ("nochoices", "no choices"),
])
def test_http_server_errors_are_retried_then_raised(mode, message):
    payload = {"500": (500, b'{"error": "overloaded"}'), "text": (200, b"<html>proxy error</html>"),
               "nochoices": (200, b'{"object": "text_completion", "choices": []}')}[mode]
    with serve(lambda body, rec: payload) as (url, rec):
        model = http_model(url, max_tries=3)
        with pytest.raises(CompletionsAPIError, match=message) as err:
            run_http(model)
        assert "after 3 tries" in str(err.value)
        assert len(rec.bodies) == 3
        assert model.stats["retries"] == 2


def test_http_client_error_is_not_retried():
    with serve(lambda body, rec: (404, b'{"error": {"message": "model tiny does not exist"}}')) as (url, rec):
        with pytest.raises(CompletionsAPIError, match="HTTP 404: model tiny does not exist"):
            run_http(http_model(url))
        assert len(rec.bodies) == 1


def test_http_recovers_from_transient_errors(completions):
    def flaky(body, rec):
        with rec.lock:
            n = len(rec.bodies)
        return (503, b"busy") if n % 2 else completions(body, rec)

    with serve(flaky) as (url, rec):
        model = http_model(url, concurrency=1)
        (response,), = run_http(model, labels=("PER", "LOC"))
        assert response.counts == {"PER": 2, "LOC": 1}
        assert sorted(m[2] for m in response.mentions) == ["Amman", "Jordan", "Peter Blackburn"]
        assert model.stats["retries"] > 0


def test_http_stalled_server_times_out():
    def stall(body, rec):
        rec.release.wait(10)
        return None, b""

    with serve(stall) as (url, rec):
        model = http_model(url, timeout=0.5, max_tries=2, interval=0.05)
        start = time.monotonic()
        with pytest.raises(CompletionsTimeout, match="within 0.5 s") as err:
            run_http(model)
        elapsed = time.monotonic() - start
        assert isinstance(err.value, TimeoutError)
        assert 1.0 <= elapsed < 2.5  # two tries of 0.5 s and a 0.05 s pause
        assert len(rec.bodies) == 2


def test_http_unreachable_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = http_model(f"http://127.0.0.1:{port}/v1", max_tries=2)
    with pytest.raises(CompletionsAPIError, match="cannot reach .*after 2 tries"):
        run_http(model)


def test_http_config_from_environment(monkeypatch):
    from spacy_padellm.llm.models import make_openai_completions_model

    monkeypatch.setenv("PADELLM_API_BASE", "http://127.0.0.1:1/v1/")
    monkeypatch.setenv("PADELLM_MODEL", "served")
    monkeypatch.delenv("PADELLM_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = make_openai_completions_model()
    assert (model.url, model.name, model._api_key) == ("http://127.0.0.1:1/v1/completions", "served", "sk-test")
    assert "sk-test" not in repr(model)
    monkeypatch.delenv("PADELLM_MODEL")
    with pytest.raises(ValueError, match="PADELLM_MODEL"):
        make_openai_completions_model()
