"""Synthetic goals (split `synth`): shaped like MultiWOZ's, solvable, deterministic, never in the benchmark."""

from __future__ import annotations

import collections

import pytest

from tests.test_teacher import run_episode
from toolwoz import synthetic
from toolwoz.audit import fixed_oracle_calls
from toolwoz.rewards import goals_met
from toolwoz.teacher import Teacher
from toolwoz.user_rule import RuleUser


@pytest.fixture(scope="module")
def synth(env):
    return sorted((t for t in env.tasks.values() if t.split == synthetic.SPLIT), key=lambda t: t.task_id)


def test_synth_split_is_its_own(env, synth):
    assert len(synth) == synthetic.DEFAULT_COUNT
    for task in synth:
        assert task.splits == [synthetic.SPLIT] and task.task_id.startswith(synthetic.PREFIX)
    benchmark = {t.task_id for t in env.tasks.values() if {"test_full", "val"} & set(t.splits)}
    assert benchmark and not benchmark & {t.task_id for t in synth}


def test_sampling_is_deterministic(mw):
    assert synthetic.sample_goals(mw.dbs, 50, seed=3) == synthetic.sample_goals(mw.dbs, 50, seed=3)
    assert synthetic.sample_goals(mw.dbs, 50, seed=3) != synthetic.sample_goals(mw.dbs, 50, seed=4)


def test_frequencies_follow_multiwoz(synth):
    two = sum(len(t.domains) == 2 for t in synth) / len(synth)
    assert abs(two - synthetic.TWO_DOMAINS) < 0.04
    per_domain = collections.Counter(d for t in synth for d in t.domains)
    assert per_domain["train"] > per_domain["attraction"] > 0
    books = sum("book_restaurant" in t.ground_truth.get("restaurant", {}).get("success", {}) for t in synth)
    restaurants = per_domain["restaurant"]
    assert abs(books / restaurants - synthetic.BOOK["restaurant"]) < 0.08
    assert any(t.goal[d].get("fail_info") for t in synth for d in t.domains)
    assert any(t.goal[d].get("fail_book") for t in synth for d in t.domains)


def test_every_goal_is_met_by_the_oracle(env, synth):
    """A perfect `fixed` agent (search with the goal, book the first row) meets every synthetic goal."""
    for task in synth:
        calls = fixed_oracle_calls(env, task)
        assert sorted(goals_met(task, calls, task.goals())) == sorted(task.goals()), task.task_id


def test_the_teacher_solves_them_with_the_rule_user(env, synth):
    teacher = Teacher.from_rows(env.rows)
    rewards = [run_episode(env, task, teacher, RuleUser(task.goal, seed=0)).reward for task in synth[:60]]
    assert sum(rewards) / len(rewards) > 0.97
