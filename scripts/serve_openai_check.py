"""Checks `bioinstruct serve` through the official `openai` client (see check-serve-openai.sh).

Every model the server lists is asked the same question greedily, without and with
streaming (the streamed pieces must join to the same text); the adapters must answer
differently from the base; completions with echo and logprobs must score every prompt token.
"""
import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)

models = client.models.list().data
ids = [m.id for m in models]
assert ids and ids[0] == "base", ids
assert len(ids) >= 3, f"expected the base and at least two adapters: {ids}"
print("models:", ids)

question = [{"role": "user", "content": "Name one symptom of influenza."}]
answers = {}
for model in ids:
    reply = client.chat.completions.create(
        model=model, messages=question, max_tokens=20, temperature=0, seed=1
    )
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length"), choice
    assert reply.usage.completion_tokens <= 20, reply.usage
    text = choice.message.content
    pieces, finish, usage = [], None, None
    stream = client.chat.completions.create(
        model=model,
        messages=question,
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert "".join(pieces) == text, (model, pieces, text)
    assert finish == choice.finish_reason, (finish, choice.finish_reason)
    assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens, usage
    answers[model] = text
    print(f"{model}: {text!r}")
assert answers[ids[1]] != answers["base"], answers
assert answers[ids[1]] != answers[ids[2]], answers

lp = client.chat.completions.create(
    model="base", messages=question, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
).choices[0].logprobs.content
assert len(lp) == 4 and all(len(t.top_logprobs) == 2 for t in lp), lp
assert all(t.top_logprobs[0].logprob == t.logprob for t in lp), lp

two = client.chat.completions.create(
    model=ids[1], messages=question, max_tokens=8, temperature=0.8, n=2, seed=3
)
assert len(two.choices) == 2 and [c.index for c in two.choices] == [0, 1], two

prompt = "Aspirin is an anti-inflammatory drug"
done = client.completions.create(
    model=ids[2], prompt=prompt, max_tokens=1, echo=True, logprobs=1, temperature=0
)
c = done.choices[0]
assert c.text.startswith(prompt), c.text
assert c.logprobs.token_logprobs[0] is None, c.logprobs
assert len(c.logprobs.tokens) == done.usage.prompt_tokens + 1, (c.logprobs, done.usage)
assert all(x < 0 for x in c.logprobs.token_logprobs[1:]), c.logprobs
assert "".join(c.logprobs.tokens) == c.text
print("completions echo logprobs:", [round(x, 3) for x in c.logprobs.token_logprobs[1:]])

try:
    client.chat.completions.create(model="no-such-model", messages=question, max_tokens=1)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert "does not exist" in str(e), e
print("ok")
