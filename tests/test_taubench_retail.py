"""τ-bench retail: the gold actions of every task score 1.0, perturbed ones score what τ-bench's rule gives, and a
few observations match values worked out by hand from τ-bench's tool code and the JSON data.

(`bench/taubench_parity.py` compares every gold observation byte for byte with τ-bench's own Python tools.)
"""

from __future__ import annotations

import json

import pytest

from taubench import rewards
from taubench.data import Action, TauTask
from taubench.env import TauEnv
from taubench.state import Branch

_runs = iter(range(10 ** 9))


def replay(env: TauEnv, actions: list[Action]) -> tuple[Branch, list[str]]:
    """Run actions on a fresh branch (one node): the branch and the observations."""
    branch = Branch(f"replay/{next(_runs)}", (0,))
    return branch, [env.call(a.name, a.kwargs, branch=branch).content for a in actions]


def reward(env: TauEnv, task: TauTask, actions: list[Action], messages: list[str] | None = None
           ) -> rewards.RewardInfo:
    branch, _ = replay(env, actions)
    try:
        return rewards.episode_reward(env, task, branch, [" ".join(task.outputs)] if messages is None else messages)
    finally:
        env.forget(branch.rollout_id)


def test_gold_actions_score_one_on_every_retail_task(retail) -> None:
    assert len(retail.tasks) == 635
    wrong = []
    for task in retail.tasks.values():
        calls = [retail.call(a.name, a.kwargs, branch=Branch(f"gold-check/{task.task_id}", (0,)))
                 for a in task.tool_actions]
        info = rewards.episode_reward(retail, task, Branch(f"gold-check/{task.task_id}", (0,)),
                                      [" ".join(task.outputs)])
        retail.forget(f"gold-check/{task.task_id}")
        if info.reward != 1.0 or rewards.goals_met(task, calls, rewards.goals(task)) != rewards.goals(task):
            wrong.append(task.task_id)
    assert wrong == []


# (task, how the gold actions are changed, τ-bench's reward) -- each case reasoned from τ-bench's tool code:
PERTURBATIONS = [
    # the second cancel never happens: order #W1242543 stays pending -> the data hash differs
    ("retail/test/76", lambda a: a[:1], 0.0),
    # a read dropped: reads change nothing, the final data is the gold data
    ("retail/test/0", lambda a: [x for x in a if x.name != "get_product_details"], 1.0),
    # the first cancel repeated: the second attempt is "Error: non-pending order cannot be cancelled", no change
    ("retail/test/76", lambda a: a + a[:1], 1.0),
    # the first modify_user_address repeated at the end: the user's final address is 101 Highway, not gold's
    ("retail/test/22", lambda a: a + [a[1]], 0.0),
    # a changed argument on a write: cancel_reason "no longer needed" instead of "ordered by mistake"
    ("retail/test/76", lambda a: [Action(a[0].name, {**a[0].kwargs, "reason": "no longer needed"}), a[1]], 0.0),
    # a changed argument on a read: another order looked up, nothing written differently
    ("retail/test/0", lambda a: [Action(x.name, {"order_id": "#W2611340"}) if x.name == "get_order_details" else x
                                 for x in a], 1.0),
    # swapped, dependent: items first make the order "pending (item modified)", so the address change then fails
    ("retail/test/71", lambda a: a[::-1], 0.0),
    # swapped, independent: two returns of two orders end in the same data either way
    ("retail/test/11", lambda a: a[:4] + a[5:] + a[4:5], 1.0),
]


@pytest.mark.parametrize("task_id, change, expected", PERTURBATIONS,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(PERTURBATIONS)])
def test_perturbed_actions_score_as_taubench_would(retail, task_id, change, expected) -> None:
    task = retail.task(task_id)
    info = reward(retail, task, change(list(task.tool_actions)))
    assert info.reward == expected and info.db_match == (expected == 1.0)
    assert (info.differences == []) == info.db_match


def test_outputs_must_be_said(retail) -> None:
    task = retail.task("retail/test/76")  # outputs: ["1939.05"]
    gold = list(task.tool_actions)
    assert reward(retail, task, gold, ["Your refund total is 1,939.05 dollars."]).reward == 1.0  # commas removed
    silent = reward(retail, task, gold, ["Both orders are cancelled."])
    assert (silent.reward, silent.db_match, silent.outputs) == (0.0, True, {"1939.05": False})
    assert reward(retail, task, gold[:1], ["1939.05"]).reward == 0.0  # said, but the database is wrong
    case = retail.task("retail/test/32")  # outputs: ["746342064230"] (a tracking id)
    assert rewards.outputs_found(case, ["Tracking: 746342064230."]) == {"746342064230": True}


def test_cancel_refunds_to_the_gift_card_at_once(retail) -> None:
    # retail/test/32: #W9373487 was paid 109.27 from gift_card_7711863 (balance 44), #W5481803 397.26 from it
    branch = Branch("hand/cancel", (0,))
    first = retail.call("cancel_pending_order", {"order_id": "#W9373487", "reason": "no longer needed"}, branch=branch)
    assert first.content.endswith(
        '"status": "cancelled", "payment_history": [{"transaction_type": "payment", "amount": 109.27, '
        '"payment_method_id": "gift_card_7711863"}, {"transaction_type": "refund", "amount": 109.27, '
        '"payment_method_id": "gift_card_7711863"}], "cancel_reason": "no longer needed"}')
    olivia = retail.read(branch, "users", "olivia_lopez_3865")
    assert olivia["payment_methods"]["gift_card_7711863"]["balance"] == 153.27
    retail.call("cancel_pending_order", {"order_id": "#W5481803", "reason": "no longer needed"}, branch=branch)
    user = retail.call("get_user_details", {"user_id": "olivia_lopez_3865"}, branch=branch).content
    assert '"gift_card_7711863": {"source": "gift_card", "balance": 550.53, "id": "gift_card_7711863"}' in user
    assert [(w["tbl"], w["key"]) for w in retail.state_changes("hand/cancel")] == [
        ("orders", "#W9373487"), ("users", "olivia_lopez_3865"),
        ("orders", "#W5481803"), ("users", "olivia_lopez_3865")]
    retail.forget("hand/cancel")


def test_exchange_records_the_price_difference(retail) -> None:
    # retail/test/0: 1151293680 (272.33) -> 7706410293 (269.16), 4983901480 (262.47) -> 7747408585 (249.01);
    # the order (paid 1819.92, the sum of its five items) keeps its payments: the difference is settled later
    branch = Branch("hand/exchange", (0,))
    done = retail.call("exchange_delivered_order_items", {
        "order_id": "#W2378156", "item_ids": ["4983901480", "1151293680"],
        "new_item_ids": ["7747408585", "7706410293"], "payment_method_id": "credit_card_9513926"}, branch=branch)
    assert done.content.endswith(
        '"status": "exchange requested", "payment_history": [{"transaction_type": "payment", "amount": 1819.92, '
        '"payment_method_id": "credit_card_9513926"}], "exchange_items": ["1151293680", "4983901480"], '
        '"exchange_new_items": ["7706410293", "7747408585"], "exchange_payment_method_id": "credit_card_9513926", '
        '"exchange_price_difference": -16.63}')
    again = retail.call("exchange_delivered_order_items", {
        "order_id": "#W2378156", "item_ids": ["4983901480"], "new_item_ids": ["7747408585"],
        "payment_method_id": "credit_card_9513926"}, branch=branch.child(1))
    assert again.content == "Error: non-delivered order cannot be exchanged"
    retail.forget("hand/exchange")


@pytest.mark.parametrize("name, kwargs, observation", [
    ("find_user_id_by_name_zip", {"first_name": "yusuf", "last_name": "ROSSI", "zip": "19122"}, "yusuf_rossi_9620"),
    ("find_user_id_by_name_zip", {"first_name": "Yusuf", "last_name": "Rossi", "zip": 19122}, "Error: user not found"),
    ("find_user_id_by_name_zip", {"first_name": 7, "last_name": "Rossi", "zip": "19122"},
     "Error: 'int' object has no attribute 'lower'"),
    ("find_user_id_by_email", {"email": "MIA.GARCIA2723@example.com"}, "mia_garcia_4516"),
    ("calculate", {"expression": "(1 + 2) * 3"}, "9.0"),
    ("calculate", {"expression": "2 / 0"}, "Error: division by zero"),
    ("calculate", {"expression": "__import__('os')"}, "Error: invalid characters in expression"),
    ("get_product_details", {"product_id": "0"}, "Error: product not found"),
    ("think", {"thought": "hm"}, ""),
    ("modify_pending_order_payment", {"order_id": "#W2378156", "payment_method_id": "credit_card_9513926"},
     "Error: non-pending order cannot be modified"),
    ("return_delivered_order_items", {"order_id": "#W2378156", "item_ids": ["4983901480"],
                                      "payment_method_id": "paypal_0"}, "Error: payment method not found"),
])
def test_observations_worked_out_by_hand(retail, name, kwargs, observation) -> None:
    assert retail.call(name, kwargs, branch=Branch("hand/obs", (0,))).content == observation


def test_product_types_are_sorted_by_name(retail) -> None:
    types = retail.call("list_all_product_types", {}, branch=Branch("hand/types", (0,))).content
    assert types.startswith('{"Action Camera": "3377618313", "Air Purifier": "3821016478", "Backpack": "2524789262"')
    assert len(json.loads(types)) == 50


def test_goals_met_takes_the_first_open_equal_gold_action(retail) -> None:
    task = retail.task("retail/test/32")  # get_order_details #W9373487, #W5481803 and #W7449508 each appear twice
    goals = rewards.goals(task)
    assert goals[0] == ("retail", "0:find_user_id_by_name_zip") and len(goals) == 13
    lookup = Action("get_order_details", {"order_id": "#W9373487"})
    assert rewards.goals_met(task, [lookup], goals) == [("retail", "3:get_order_details")]
    assert rewards.goals_met(task, [lookup, lookup], goals) == [("retail", "3:get_order_details"),
                                                                 ("retail", "7:get_order_details")]
    assert rewards.goals_met(task, [lookup], [g for g in goals if g[1] != "3:get_order_details"]) == \
        [("retail", "7:get_order_details")]
    wrong = Action("get_order_details", {"order_id": "#W9373487", "extra": 1})
    assert rewards.goals_met(task, [wrong, {"name": "think", "kwargs": {"thought": "x"}}], goals) == []
    cancel = {"order_id": "#W9373487", "reason": "no longer needed"}
    retail.call("cancel_pending_order", cancel, branch=Branch("goals", (0,)))
    failed = retail.call("cancel_pending_order", cancel, branch=Branch("goals", (0, 1)))
    assert failed.content == "Error: non-pending order cannot be cancelled"
    assert rewards.goals_met(task, [failed], goals) == [("retail", "8:cancel_pending_order")]  # the action counts
    retail.forget("goals")
