"""Time one training step on the device (LoRA and full) to size the real runs."""
import sys, time, torch, random
from spacy_padellm.loading import resolve_model, load_base_model, load_tokenizer
from spacy_padellm.text.protocol import PromptEncoder, get_template
from spacy_padellm.training.data import read_examples, tokenize_examples, collate as _collate
from spacy_padellm.training.trainer import _target_loss

base = sys.argv[1]; data = sys.argv[2]
src = resolve_model(base)
tok = load_tokenizer(src)
enc = PromptEncoder(tok, get_template("en"))
ex = read_examples(data)[:4096]
items = tokenize_examples(enc, ex)
print("cuda", torch.cuda.is_available(), "mean len", sum(len(i) for i, _ in items) / len(items))
for method in ("lora", "full"):
    model = load_base_model(src, torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.cuda().train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for bs in (64, 128):
        times = []
        for step in range(12):
            batch = random.sample(items, bs)
            ids, mask, lab = (t.cuda() for t in _collate(batch, tok.eos_token_id))
            torch.cuda.synchronize(); t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = _target_loss(model, ids, mask, lab, False) / 100
            loss.backward(); opt.step(); opt.zero_grad()
            torch.cuda.synchronize(); times.append(time.perf_counter() - t0)
        print(method, bs, "step ms", round(1000 * sorted(times[2:])[len(times[2:]) // 2], 1), "device", next(model.parameters()).device)
