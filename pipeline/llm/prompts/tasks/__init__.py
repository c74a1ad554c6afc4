"""The prompt tasks, one class each, and `TASK_BY_NAME`, in schema.TASKS order: the order the
training rows of each task are written in."""
from __future__ import annotations

from pipeline.llm.prompts.tasks.base import Task
from pipeline.llm.prompts.tasks.bpr import BPR
from pipeline.llm.prompts.tasks.interaction import Interaction
from pipeline.llm.prompts.tasks.mim import MIM
from pipeline.llm.prompts.tasks.mlm import MLM
from pipeline.llm.prompts.tasks.rating import Rating
from pipeline.llm.prompts.tasks.retrieval import Ranking, Retrieval
from pipeline.llm.prompts.tasks.topk import TopK

TASK_BY_NAME: dict[str, Task] = {t.name: t for t in (Interaction(), TopK(), Retrieval(), Ranking(), Rating(),
                                                      MIM(), BPR(), MLM())}
