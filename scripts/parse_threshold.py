"""Measure the embedding-fallback threshold of ``emoprobe.parse``.

Hand-made answers that describe an emotion without naming any label form (paraphrases, with the intended
MAFW label) are compared with unrelated answers and refusals. For each answer the script prints the best and
second-best label similarity (all-MiniLM-L6-v2), then the two distributions and, for candidate
thresholds/margins, how many paraphrases are accepted (and how many of those correctly) and how many
unrelated answers are wrongly accepted. The chosen values live in ``parse.EMBED_THRESHOLD`` / ``EMBED_MARGIN``.

    python scripts/parse_threshold.py
"""
from __future__ import annotations

import sys

PARAPHRASES = [
    ("The person looks joyful.", "happiness"),
    ("She is smiling broadly and seems delighted.", "happiness"),
    ("He looks cheerful and content.", "happiness"),
    ("The man is furious.", "anger"),
    ("She looks enraged and hostile.", "anger"),
    ("He seems irritated and mad.", "anger"),
    ("The woman seems terrified.", "fear"),
    ("He looks panicked and horrified.", "fear"),
    ("She appears gloomy and sorrowful.", "sadness"),
    ("He looks unhappy and tearful, close to crying.", "sadness"),
    ("The person appears worried and nervous.", "anxiety"),
    ("She looks uneasy and tense.", "anxiety"),
    ("He looks astonished.", "surprise"),
    ("She seems shocked and amazed.", "surprise"),
    ("He looks repulsed, as if something smells bad.", "disgust"),
    ("She seems grossed out and revolted.", "disgust"),
    ("He is sneering with scorn.", "contempt"),
    ("She looks at them with disdain.", "contempt"),
    ("He looks let down.", "disappointment"),
    ("She seems disillusioned, her hopes dashed.", "disappointment"),
    ("He looks powerless, unable to do anything about it.", "helplessness"),
    ("She seems resigned and defenceless.", "helplessness"),
    ("Her face is expressionless.", "neutral"),
    ("He shows no particular emotion.", "neutral"),
]
UNRELATED = [
    "I cannot determine that from the video.",
    "Sorry, I can't help with that request.",
    "The video shows a man in a blue shirt standing in a kitchen.",
    "The weather is nice today.",
    "Frame 3 is blurry.",
    "There is not enough information to answer.",
    "The person is talking on the phone.",
    "A woman with long hair sits in a car.",
    "The lighting changes between the frames.",
    "The answer depends on the context.",
    "Please provide the video.",
    "Two people are walking down the street.",
    "It is difficult to say.",
    "The camera zooms in slowly.",
    "The emotion cannot be identified.",
    "unknown",
    "N/A",
    "The person's face is partly hidden by a hat.",
]


def main() -> int:
    import numpy as np

    from emoprobe import labels, parse

    labs = labels.MAFW

    def top2(text):
        sims = sorted(parse.similarities(text, labs).items(), key=lambda kv: kv[1], reverse=True)
        return sims[0][0], sims[0][1], sims[0][1] - sims[1][1]

    print(f"{'kind':10s} {'best':>6s} {'margin':>6s}  {'top label':15s} {'intended':15s} text")
    para = []
    for text, want in PARAPHRASES:
        named, _ = parse._mentions(text, labs)
        assert not named, f"paraphrase names a label form: {text!r} -> {named}"
        lab, s, m = top2(text)
        para.append((s, m, lab == want))
        print(f"{'para':10s} {s:6.3f} {m:6.3f}  {lab:15s} {want:15s} {text}")
    unrel = []
    for text in UNRELATED:
        lab, s, m = top2(text)
        unrel.append((s, m))
        print(f"{'unrelated':10s} {s:6.3f} {m:6.3f}  {lab:15s} {'-':15s} {text}")
    ps = np.array([p[0] for p in para]); us = np.array([u[0] for u in unrel])
    print(f"\nparaphrases best sim: min {ps.min():.3f} median {np.median(ps):.3f} max {ps.max():.3f}; "
          f"top-1 correct {sum(p[2] for p in para)}/{len(para)}")
    print(f"unrelated   best sim: min {us.min():.3f} median {np.median(us):.3f} max {us.max():.3f}")
    print(f"\n{'thr':>5s} {'margin':>6s} {'para accepted':>14s} {'of which right':>15s} {'unrelated accepted':>19s}")
    for thr in (0.35, 0.40, 0.45, 0.50, 0.55, 0.60):
        for mar in (0.0, 0.03, 0.05, 0.08):
            acc = [p for p in para if p[0] >= thr and p[1] >= mar]
            bad = [u for u in unrel if u[0] >= thr and u[1] >= mar]
            print(f"{thr:5.2f} {mar:6.2f} {len(acc):>8d}/{len(para):<5d} {sum(a[2] for a in acc):>15d} "
                  f"{len(bad):>12d}/{len(unrel)}")
    print(f"\nchosen: EMBED_THRESHOLD={parse.EMBED_THRESHOLD} EMBED_MARGIN={parse.EMBED_MARGIN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
