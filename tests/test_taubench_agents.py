"""τ-bench's scripted oracle agent, scripted user and replay: the oracle reaches reward 1.0 on all 685 tasks at
temperature 0, explores (changed arguments, swapped and skipped actions) at temperature > 0, and replay agrees
with τ-bench's reward rule on gold and perturbed action sequences.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from taubench import data, rewards
from taubench.env import TauEnv
from taubench.errors import DataError, UnknownTool
from taubench.oracle import WRITES, OracleAgent, Planned, parse_confirmation
from taubench.replay import load_actions, replay
from taubench.state import Branch
from taubench.users import GREETING, MAX_TURNS, STOP, ScriptedUser, llm_user_messages, opening


@pytest.fixture(scope="module")
def envs(retail, airline) -> dict[str, TauEnv]:
    """One env per domain, shared by every rollout (each rollout's writes are forgotten after it)."""
    return {"retail": retail, "airline": airline}


def episode(env: TauEnv, task: data.TauTask, seed: int = 0, temperature: float = 0.0,
            rollout_id: str = "test") -> tuple[rewards.RewardInfo, list[dict[str, Any]]]:
    """Oracle vs scripted user on one branch: tool calls run through `TauEnv.call`, text goes to the user;
    ends on ###STOP### or a call that ends the conversation. Returns the reward and the whole conversation."""
    agent, user = OracleAgent(task, seed, temperature), ScriptedUser(task, seed)
    branch = Branch(rollout_id, (0,))
    first = user.reply([])
    messages: list[dict[str, Any]] = [{"role": "system", "content": env.wiki}, {"role": "user", "content": first}]
    visible = [{"role": "user", "content": first}]
    said: list[str] = []
    pos = 0
    try:
        for _ in range(200):
            message = agent.next_message(messages)
            messages.append(message)
            if message.get("tool_calls"):
                ended = False
                for call in message["tool_calls"]:
                    result = env.call(call["function"]["name"], call["function"]["arguments"], branch=branch,
                                      pos=pos)
                    pos += 1
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": result.content})
                    ended = ended or result.ends_conversation
                if ended:
                    break
                continue
            said.append(message["content"])
            visible.append({"role": "assistant", "content": message["content"]})
            reply = user.reply(visible)
            visible.append({"role": "user", "content": reply})
            messages.append({"role": "user", "content": reply})
            if STOP in reply:
                break
        else:
            raise AssertionError(f"{task.task_id}: the conversation did not end")
        return rewards.episode_reward(env, task, branch, said), messages
    finally:
        env.forget(rollout_id)


def _calls(messages: list[dict[str, Any]]) -> list[data.Action]:
    return [data.Action(c["function"]["name"], json.loads(c["function"]["arguments"]))
            for m in messages for c in m.get("tool_calls") or []]


# -- (1) the oracle at temperature 0 ------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", data.DOMAINS)
def test_oracle_scores_one_on_every_task(envs, domain):
    env = envs[domain]
    tasks = sorted(env.tasks.values(), key=lambda t: (t.split, t.index))
    assert len(tasks) == {"retail": 500 + 20 + 115, "airline": 50}[domain]
    failed, ends = [], set()
    for task in tasks:
        info, messages = episode(env, task)
        if info.reward != 1.0:
            failed.append((task.task_id, info))
        assert _calls(messages) == list(task.tool_actions), task.task_id
        last = messages[-1]
        ends.add("transfer" if last["role"] == "tool" else last["content"])
        # the rollout's writes are gone; the gold branch is the only one left
        left = env.con.execute("SELECT count(*) FROM taubench_writes WHERE rollout_id = 'test'").fetchone()[0]
        assert left == 0
    assert failed == []
    assert ends <= {STOP, "transfer"}
    if domain == "airline":
        assert "transfer" in ends


def test_oracle_confirms_before_each_write(envs):
    env = envs["retail"]
    task = env.tasks["retail/test/16"]  # three writes and an output
    info, messages = episode(env, task)
    assert info.reward == 1.0 and info.db_match and info.outputs == {"8276.23": True}
    for i, m in enumerate(messages):
        for call in m.get("tool_calls") or []:
            if call["function"]["name"] in WRITES:
                asked = messages[i - 2]
                assert parse_confirmation(asked["content"]) == Planned(call["function"]["name"],
                                                                       json.loads(call["function"]["arguments"]))
                assert messages[i - 1]["role"] == "user" and messages[i - 1]["content"].startswith("Yes")
    texts = [m["content"] for m in messages if m["role"] == "assistant" and not m.get("tool_calls")]
    assert sum(t.endswith("Do you confirm that I should proceed (yes/no)?") for t in texts) == 3
    assert "8276.23" in texts[-1] and texts[-1].endswith("Is there anything else I can help you with?")
    assert messages[-1] == {"role": "user", "content": STOP}


# -- (2) exploration at temperature > 0 ---------------------------------------------------------------------------


def test_oracle_temperature_one_differs_by_seed_and_sometimes_fails(envs):
    env = envs["retail"]
    tasks = [t for t in sorted(env.tasks.values(), key=lambda t: t.index) if t.split == "test"
             and sum(a.name in WRITES for a in t.actions) >= 2][:6]
    scores, distinct = [], 0
    for task in tasks:
        conversations = set()
        for seed in range(4):
            info, messages = episode(env, task, seed=seed, temperature=1.0)
            scores.append(info.reward)
            conversations.add(json.dumps(messages))
        distinct += len(conversations) > 1
        again = episode(env, task, seed=3, temperature=1.0)[1]  # deterministic per seed
        assert json.dumps(again) in conversations
    assert distinct >= 4
    assert 0.0 in scores and 1.0 in scores


def _oracle_only(task: data.TauTask, seed: int, temperature: float) -> list[data.Action]:
    """The calls the oracle makes with the scripted user (tool results left empty: the oracle never reads them)."""
    agent, user = OracleAgent(task, seed, temperature), ScriptedUser(task, seed)
    messages = [{"role": "user", "content": user.reply([])}]
    for _ in range(100):
        message = agent.next_message(messages)
        messages.append(message)
        if message.get("tool_calls"):
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": ""} for c in message["tool_calls"]]
            continue
        reply = user.reply([m for m in messages if m["role"] != "tool" and not m.get("tool_calls")])
        messages.append({"role": "user", "content": reply})
        if STOP in reply:
            return _calls(messages)
    raise AssertionError("no end")


def test_oracle_perturbations_change_swap_and_skip(envs):
    task = envs["retail"].tasks["retail/test/16"]
    gold = list(task.tool_actions)
    kinds = {"changed": 0, "swapped": 0, "skipped": 0}
    perturbed = {0.0: 0, 0.3: 0, 1.0: 0}
    for temperature in perturbed:
        for seed in range(150):
            calls = _oracle_only(task, seed, temperature)
            perturbed[temperature] += calls != gold
            if temperature != 1.0:
                continue
            kinds["changed"] += any(c not in gold for c in calls)
            kinds["skipped"] += len(calls) < len(gold)
            exact = [gold.index(c) for c in calls if c in gold]
            kinds["swapped"] += exact != sorted(exact)
            assert len(calls) <= len(gold)  # one call per gold position at most
    assert perturbed[0.0] == 0 < perturbed[0.3] < perturbed[1.0]
    assert all(n > 0 for n in kinds.values()), kinds


# -- (3) replay and τ-bench's reward rule ------------------------------------------------------------------------


def _replay(env: TauEnv, task: data.TauTask, actions: list[Any]) -> rewards.RewardInfo:
    result = replay(env, task, actions)
    assert len(result.observations) <= len(actions)
    return result.reward


def test_replay_gold_scores_one(envs):
    for task_id in ("retail/test/0", "retail/train/0", "retail/test/104", "airline/test/0", "airline/test/16"):
        domain = task_id.split("/")[0]
        task = envs[domain].tasks[task_id]
        said = [{"name": "respond", "kwargs": {"content": f"Here you go: {', '.join(task.outputs)}."}}]
        result = replay(envs[domain], task, [*(a.to_dict() for a in task.actions), *said])
        assert result.reward.reward == 1.0 and result.reward.db_match, task_id
        assert len(result.observations) == len(task.actions) + 1 and result.observations[-1] == ""
        assert not any(o.startswith("Error") for o in result.observations), task_id
        assert result.turn_goals == [*([g] for g in rewards.goals(task)), []]
        left = envs[domain].con.execute("SELECT count(*) FROM taubench_writes WHERE rollout_id LIKE 'replay-%'")
        assert left.fetchone()[0] == 0


def test_replay_outputs_must_be_said(envs):
    env = envs["retail"]
    task = env.tasks["retail/test/16"]
    gold = [a.to_dict() for a in task.actions]
    silent = _replay(env, task, gold)
    assert (silent.reward, silent.db_match, silent.outputs) == (0.0, True, {"8276.23": False})
    said = _replay(env, task, [*gold, {"name": "respond", "kwargs": {"content": "You get back $8,276.23 in total."}}])
    assert (said.reward, said.outputs) == (1.0, {"8276.23": True})


def test_replay_perturbed_sequences_score_as_tau_bench(envs):
    retail, airline = envs["retail"], envs["airline"]
    exchange = retail.tasks["retail/test/0"]  # reads, then one exchange
    gold = [a.to_dict() for a in exchange.actions]
    # dropped write: the database misses the exchange
    assert _replay(retail, exchange, gold[:-1]).reward == 0.0
    # changed argument: of the write -> 0; of a read -> the database is the same, so 1 (τ-bench checks the DB)
    wrong_item = json.loads(json.dumps(gold))
    wrong_item[-1]["kwargs"]["new_item_ids"] = ["7706410293", "4983901480"]
    assert _replay(retail, exchange, wrong_item).db_match is False
    wrong_read = json.loads(json.dumps(gold))
    wrong_read[1]["kwargs"]["order_id"] = "#W0000000"
    result = replay(retail, exchange, wrong_read)
    assert result.observations[1] == "Error: order not found" and result.reward.reward == 1.0
    assert result.turn_goals[1] == []
    # repeated write: a second cancel fails and changes nothing (1.0); a second certificate is a new row (0.0)
    cancel = retail.tasks["retail/train/137"]
    twice = [a.to_dict() for a in cancel.actions] * 2
    result = replay(retail, cancel, twice)
    assert result.reward.reward == 1.0 and result.observations[1].startswith("Error")
    assert result.turn_goals == [[rewards.goals(cancel)[0]], []]
    certificate = airline.tasks["airline/test/16"]
    gold = [a.to_dict() for a in certificate.actions]
    assert _replay(airline, certificate, [*gold, gold[-1]]).reward == 0.0
    amount = [gold[0], {"name": "send_certificate", "kwargs": {**gold[1]["kwargs"], "amount": 100}}]
    assert _replay(airline, certificate, amount).reward == 0.0
    # swapped order: changing the items first makes the address change fail (the databases differ); independent
    # writes swap freely (the same database)
    four = retail.tasks["retail/test/104"]
    gold = [a.to_dict() for a in four.actions]
    result = replay(retail, four, [gold[0], gold[1], gold[3], gold[2]])
    assert result.observations[3].startswith("Error") and not result.reward.db_match
    assert result.reward.differences == [("orders", "#W4860251")]
    assert _replay(retail, four, [gold[1], gold[0], gold[2], gold[3]]).db_match


def test_replay_stops_at_transfer(envs):
    env = envs["airline"]
    task = env.tasks["airline/test/13"]
    gold = [a.to_dict() for a in task.actions]
    result = replay(env, task, [*gold, {"name": "send_certificate", "kwargs": {"user_id": task.user_id, "amount": 1}}])
    assert len(result.observations) == 1 and result.reward.reward == 1.0


def test_replay_file_errors(envs, tmp_path):
    env = envs["retail"]
    task = env.tasks["retail/test/0"]
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"name": "get_order_details", "kwargs": {"order_id": "#W2378156"}},
                                {"name": "respond", "kwargs": {"content": "done"}}, {"name": "think"}]))
    actions = load_actions(good)
    assert [a["name"] for a in actions] == ["get_order_details", "respond", "think"]
    assert actions[2]["kwargs"] == {}
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"name": "get_order_details", "kwargs": {"order_id": "#W2378156"}},
                                   {"name": "refund_everything", "kwargs": {}}]))
    with pytest.raises(UnknownTool) as e:
        replay(env, task, load_actions(unknown))
    assert "'refund_everything'" in str(e.value) and "\n" not in str(e.value)
    assert env.con.execute("SELECT count(*) FROM taubench_writes WHERE rollout_id LIKE 'replay-%'").fetchone()[0] == 0
    for name, text, words in (("broken.json", '[{"name": "think",', "does not parse"),
                              ("noname.json", '[{"kwargs": {}}]', "action 0 has no name"),
                              ("notlist.json", '{"name": "think"}', "expected a JSON list"),
                              ("badkwargs.json", '[{"name": "think", "kwargs": [1]}]', "not an object")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataError) as e:
            load_actions(path)
        assert words in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="no such file"):
        load_actions(tmp_path / "missing.json")


# -- (4) the scripted user -------------------------------------------------------------------------------------


def test_scripted_user_openings(envs):
    retail, airline = envs["retail"].tasks, envs["airline"].tasks
    assert opening(retail["retail/train/0"]) == (
        "Hi! My name is Omar Anderson and my zip code is 19031. "
        "Return #W6067464 via credit_card_4190576: Electric Kettle; Wall Clock;")
    assert opening(retail["retail/train/137"]) == ("Hi! My email is ethan.smith4017@example.com. "
                                                   "Cancel order #W1138897 because no longer needed.")
    assert ScriptedUser(retail["retail/test/0"], 0).reply([]) == (
        "Hi! My name is Yusuf Rossi and my zip code is 19122. I received my order #W2378156 and wish to exchange the "
        "mechanical keyboard for a similar one but with clicky switches and the smart thermostat for one compatible "
        "with Google Home instead of Apple HomeKit. If there is no keyboard that is clicky, RGB backlight, full "
        "size, I'd go for no backlight. I am detail-oriented and want to make sure everything is addressed in one "
        "go.")
    # the gold actions look the user up by email first: the email, although the instruction also gives name + zip
    assert opening(retail["retail/test/36"]).startswith("Hi! My email is daikisanchez1479@example.com. I just placed")
    assert opening(airline["airline/test/0"]).startswith(
        "Hi! My user id is mia_li_3668. I want to fly from New York to Seattle on May 20 (one way). I do not want")
    assert {opening(retail["retail/train/0"], s)[:6] for s in range(20)} > {"Hi! My"}  # the greeting varies by seed


def test_scripted_user_replies():
    task = data.TauTask("retail/test/x", "retail", "test", 0, "noah_ito_3850",
                        "Your name is Noah Ito and your zip code is 98187. Cancel order #W1234567 because no longer "
                        "needed.", (data.Action("find_user_id_by_name_zip", {"first_name": "Noah", "last_name": "Ito",
                                                                              "zip": "98187"}),), ())
    user = ScriptedUser(task, 1)
    first = user.reply([])
    history = [{"role": "user", "content": first}]

    def answer(text: str) -> str:
        return user.reply([*history, {"role": "assistant", "content": text}])

    assert first.endswith("My name is Noah Ito and my zip code is 98187. Cancel order #W1234567 because no longer "
                          "needed.")
    assert answer("Could you tell me your email or your name and zip code?") == \
        "My name is Noah Ito and my zip code is 98187."
    assert answer("Which order id is it?") == "The order id is #W1234567."
    assert answer("I will cancel it. Do you confirm (yes/no)?").startswith("Yes")
    assert answer("Your order is cancelled. Is there anything else I can help you with?") == STOP
    assert answer("What is your favourite colour?").startswith("As I said: Cancel order #W1234567")
    assert user.reply(history) != STOP  # the agent said nothing (its turn ran out of calls): the user goes on
    long = [m for _ in range(MAX_TURNS) for m in ({"role": "user", "content": "hello"},
                                                   {"role": "assistant", "content": "What?"})]
    assert user.reply(long) == STOP
    assert user.reply(history) == user.reply(list(history))  # a pure function of the history


def test_llm_user_messages():
    instruction = "You are mia_li_3668. You want to fly {one way}."
    messages = llm_user_messages(instruction, [])
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith(f"You are an user interacting with an agent.\n\nInstruction: "
                                             f"{instruction}\n\nRules:\n- Just generate one line at a time")
    assert "generate '###STOP###' as a standalone message" in messages[0]["content"]
    assert messages[1:] == [{"role": "user", "content": GREETING}]
    history = [{"role": "user", "content": "Hi, I want to fly."}, {"role": "assistant", "content": "Your user id?"}]
    assert llm_user_messages(instruction, history)[1:] == [
        {"role": "user", "content": GREETING}, {"role": "assistant", "content": "Hi, I want to fly."},
        {"role": "user", "content": "Your user id?"}]
