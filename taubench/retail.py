"""τ-bench's 16 retail tools over a branch's database (base ⊕ the branch's writes).

Each behaves as τ-bench's `tau_bench/envs/retail/tools/*.py` does: the same checks in the same order, the same
`Error: ...` texts, the same `json.dumps` observations and the same changes (which `BranchDB` turns into write
rows). Searches over users and products are SQL over the overlay (`sql/taubench/retail_*.sql`).
"""

from __future__ import annotations

import json
from typing import Any

from taubench.common import calculate, think, transfer_to_human_agents
from taubench.state import BranchDB, tool

CANCEL_REASONS = ("no longer needed", "ordered by mistake")


def _address(address1: Any, address2: Any, city: Any, state: Any, country: Any, zip: Any) -> dict[str, Any]:
    return {"address1": address1, "address2": address2, "city": city, "state": state, "country": country,
            "zip": zip}


def _order(data: BranchDB, order_id: str, status: str, error: str) -> tuple[Any, str | None]:
    """(the order, None), or (None, τ-bench's error) when it does not exist or its status is not `status`."""
    order = data.get("orders", order_id)
    if order is None:
        return None, "Error: order not found"
    if order["status"] != status:
        return None, error
    return order, None


def _missing_items(order: dict[str, Any], item_ids: Any) -> Any:
    """The first asked item id that the order holds fewer times than asked, else None."""
    held = [item["item_id"] for item in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > held.count(item_id):
            return item_id
    return None


def _swap_difference(data: BranchDB, order: dict[str, Any], item_ids: Any, new_item_ids: Any
                     ) -> tuple[float, str | None]:
    """(new minus old price of the swapped items, None), or (0, τ-bench's error) when an item is not in the order,
    the counts differ or a new item is not available (the checks exchanges and item modifications share)."""
    if (missing := _missing_items(order, item_ids)) is not None:
        return 0, f"Error: {missing} not found"
    if len(item_ids) != len(new_item_ids):
        return 0, "Error: the number of items to be exchanged should match"
    diff = 0
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        item = [i for i in order["items"] if i["item_id"] == item_id][0]
        variants = data.row("products", item["product_id"])["variants"]
        if not (new_item_id in variants and variants[new_item_id]["available"]):
            return 0, f"Error: new item {new_item_id} not found or available"
        diff += variants[new_item_id]["price"] - item["price"]
    return diff, None


@tool("CancelPendingOrder")
def cancel_pending_order(data: BranchDB, order_id: str, reason: str) -> str:
    order, problem = _order(data, order_id, "pending", "Error: non-pending order cannot be cancelled")
    if problem:
        return problem
    if reason not in CANCEL_REASONS:
        return "Error: invalid reason"
    refunds = []
    for payment in order["payment_history"]:
        method_id = payment["payment_method_id"]
        refunds.append({"transaction_type": "refund", "amount": payment["amount"], "payment_method_id": method_id})
        if "gift_card" in method_id:  # a gift card is refunded at once
            card = data.row("users", order["user_id"])["payment_methods"][method_id]
            card["balance"] = round(card["balance"] + payment["amount"], 2)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    order["payment_history"].extend(refunds)
    return json.dumps(order)


@tool("ExchangeDeliveredOrderItems")
def exchange_delivered_order_items(data: BranchDB, order_id: str, item_ids: list[str], new_item_ids: list[str],
                                   payment_method_id: str) -> str:
    order, problem = _order(data, order_id, "delivered", "Error: non-delivered order cannot be exchanged")
    if problem:
        return problem
    diff, problem = _swap_difference(data, order, item_ids, new_item_ids)
    if problem:
        return problem
    diff = round(diff, 2)
    methods = data.row("users", order["user_id"])["payment_methods"]
    if payment_method_id not in methods:
        return "Error: payment method not found"
    method = methods[payment_method_id]
    if method["source"] == "gift_card" and method["balance"] < diff:
        return "Error: insufficient gift card balance to pay for the price difference"
    order["status"] = "exchange requested"
    order["exchange_items"] = sorted(item_ids)
    order["exchange_new_items"] = sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff
    return json.dumps(order)


@tool("FindUserIdByEmail")
def find_user_id_by_email(data: BranchDB, email: str) -> str:
    rows = data.query("retail_user_by_email", {"email": email.lower()})
    return rows[0][0] if rows else "Error: user not found"


@tool("FindUserIdByNameZip")
def find_user_id_by_name_zip(data: BranchDB, first_name: str, last_name: str, zip: str) -> str:
    for user_id, last, user_zip in data.query("retail_users_by_first_name", {"first_name": first_name.lower()}):
        if last.lower() == last_name.lower() and json.loads(user_zip) == zip:
            return user_id
    return "Error: user not found"


@tool("GetOrderDetails")
def get_order_details(data: BranchDB, order_id: str) -> str:
    text = data.text("orders", order_id)
    return "Error: order not found" if text is None else text


@tool("GetProductDetails")
def get_product_details(data: BranchDB, product_id: str) -> str:
    text = data.text("products", product_id)
    return "Error: product not found" if text is None else text


@tool("GetUserDetails")
def get_user_details(data: BranchDB, user_id: str) -> str:
    text = data.text("users", user_id)
    return "Error: user not found" if text is None else text


@tool("ListAllProductTypes")
def list_all_product_types(data: BranchDB) -> str:
    types = {name: json.loads(product_id) for name, product_id in data.query("retail_product_types")}
    return json.dumps(dict(sorted(types.items())))


@tool("ModifyPendingOrderAddress")
def modify_pending_order_address(data: BranchDB, order_id: str, address1: str, address2: str, city: str,
                                 state: str, country: str, zip: str) -> str:
    order, problem = _order(data, order_id, "pending", "Error: non-pending order cannot be modified")
    if problem:
        return problem
    order["address"] = _address(address1, address2, city, state, country, zip)
    return json.dumps(order)


@tool("ModifyPendingOrderItems")
def modify_pending_order_items(data: BranchDB, order_id: str, item_ids: list[str], new_item_ids: list[str],
                               payment_method_id: str) -> str:
    order, problem = _order(data, order_id, "pending", "Error: non-pending order cannot be modified")
    if problem:
        return problem
    diff, problem = _swap_difference(data, order, item_ids, new_item_ids)
    if problem:
        return problem
    methods = data.row("users", order["user_id"])["payment_methods"]
    if payment_method_id not in methods:
        return "Error: payment method not found"
    method = methods[payment_method_id]
    if method["source"] == "gift_card" and method["balance"] < diff:
        return "Error: insufficient gift card balance to pay for the new item"
    order["payment_history"].append({"transaction_type": "payment" if diff > 0 else "refund",
                                     "amount": abs(diff), "payment_method_id": payment_method_id})
    if method["source"] == "gift_card":
        method["balance"] = round(method["balance"] - diff, 2)
    for item_id, new_item_id in zip(item_ids, new_item_ids):
        item = [i for i in order["items"] if i["item_id"] == item_id][0]
        variant = data.row("products", item["product_id"])["variants"][new_item_id]
        item["item_id"] = new_item_id
        item["price"] = variant["price"]
        item["options"] = variant["options"]
    order["status"] = "pending (item modified)"
    return json.dumps(order)


@tool("ModifyPendingOrderPayment")
def modify_pending_order_payment(data: BranchDB, order_id: str, payment_method_id: str) -> str:
    order, problem = _order(data, order_id, "pending", "Error: non-pending order cannot be modified")
    if problem:
        return problem
    methods = data.row("users", order["user_id"])["payment_methods"]
    if payment_method_id not in methods:
        return "Error: payment method not found"
    history = order["payment_history"]
    if len(history) > 1 or history[0]["transaction_type"] != "payment":
        return "Error: there should be exactly one payment for a pending order"
    old_id = history[0]["payment_method_id"]
    if old_id == payment_method_id:
        return "Error: the new payment method should be different from the current one"
    amount = history[0]["amount"]
    method = methods[payment_method_id]
    if method["source"] == "gift_card" and method["balance"] < amount:
        return "Error: insufficient gift card balance to pay for the order"
    history.extend([{"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
                    {"transaction_type": "refund", "amount": amount, "payment_method_id": old_id}])
    if method["source"] == "gift_card":
        method["balance"] = round(method["balance"] - amount, 2)
    if "gift_card" in old_id:  # the refund goes back onto the old gift card at once
        old = methods[old_id]
        old["balance"] = round(old["balance"] + amount, 2)
    return json.dumps(order)


@tool("ModifyUserAddress")
def modify_user_address(data: BranchDB, user_id: str, address1: str, address2: str, city: str, state: str,
                        country: str, zip: str) -> str:
    user = data.get("users", user_id)
    if user is None:
        return "Error: user not found"
    user["address"] = _address(address1, address2, city, state, country, zip)
    return json.dumps(user)


@tool("ReturnDeliveredOrderItems")
def return_delivered_order_items(data: BranchDB, order_id: str, item_ids: list[str], payment_method_id: str) -> str:
    order, problem = _order(data, order_id, "delivered", "Error: non-delivered order cannot be returned")
    if problem:
        return problem
    if payment_method_id not in data.row("users", order["user_id"])["payment_methods"]:
        return "Error: payment method not found"
    if "gift_card" not in payment_method_id and payment_method_id != order["payment_history"][0]["payment_method_id"]:
        return "Error: payment method should be either the original payment method or a gift card"
    if _missing_items(order, item_ids) is not None:
        return "Error: some item not found"
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return json.dumps(order)


TOOLS = (calculate, cancel_pending_order, exchange_delivered_order_items, find_user_id_by_email,
         find_user_id_by_name_zip, get_order_details, get_product_details, get_user_details, list_all_product_types,
         modify_pending_order_address, modify_pending_order_items, modify_pending_order_payment, modify_user_address,
         return_delivered_order_items, think, transfer_to_human_agents)
