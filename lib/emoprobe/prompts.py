"""Prompt templates, shared by the backends, the MicroVLM training data and the prompt-sensitivity chapter.

Templates are plain ``str.format`` strings with the fields ``{labels}`` (comma-separated label list) and,
for MSCE, ``{context}``. The template *text* is part of every run-store key.
"""
from __future__ import annotations

QUESTION = "What is the emotion of the person in the video?"

TEMPLATES = {
    # The paper's classification prompt (question + label choices), answer with one label.
    "paper": (
        "Question: " + QUESTION + "\n"
        "Emotion Labels choices: {labels}\n"
        "Answer with exactly one label from the choices."
    ),
    # MSCE stage 2 (seed 001, Sec. 4.2): keyframes interleaved with motion text are placed by the backend;
    # this is the text that follows them.
    "msce": (
        "Analyze the following sequence of sparse keyframes and the detailed motion descriptions for the gaps "
        "between them.\n"
        "Question: " + QUESTION + "\n"
        "Emotion Labels choices: {labels}\n"
        "Answer with exactly one label from the choices."
    ),
    # Open vocabulary (no label list): used by the prompt-sensitivity chapter.
    "open": "Question: " + QUESTION + "\nAnswer with one word.",
    # JSON answer format.
    "json": (
        "Question: " + QUESTION + "\n"
        "Emotion Labels choices: {labels}\n"
        'Reply in JSON as {{"emotion": "<label>"}}.'
    ),
}

DESCRIBE = {
    # MSCE stage 1: motion-to-text for a short group of in-between frames.
    "motion": "Describe how the face moves across these frames: which region moves, when, and how much.",
}


def render(template: str, labels, context: str | None = None) -> str:
    """Render a named template (or a literal template string) for ``labels``."""
    text = TEMPLATES.get(template, template)
    return text.format(labels=", ".join(labels), context=context or "")
