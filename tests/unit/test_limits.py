"""Which limits count a decision, and under which counter."""

from valetkey.policy.limits import EACH_USER, Limit, applicable, charges


def _limit(ident: str, agent: str | None = None, user: str | None = None,
           klass: str | None = None, per: str = "day") -> Limit:  # fmt: skip
    return Limit(ident, "ten_1", agent, user, klass, "count", 5, per)  # type: ignore[arg-type]


def test_agent_overrides_replace_the_tenant_default() -> None:
    default, own = _limit("d", klass="send"), _limit("o", agent="agt_a", klass="send")
    assert applicable([default, own], "agt_a", None, "send") == [own]
    assert applicable([default, own], "agt_b", None, "send") == [default]
    assert applicable([default, own], "agt_b", None, "read") == []


def test_defaults_count_each_agent_and_each_user_apart() -> None:
    default = _limit("d")
    per_user = _limit("u", user=EACH_USER)
    one_user = _limit("x", user="usr_1")
    keys = {c.key for c in charges([default, per_user, one_user], "agt_a", "usr_1", "read", 0, 0)}
    assert keys == {"L:d:agt_a", "L:u:agt_a:usr_1", "L:x:agt_a"}
    other = {c.key for c in charges([default, per_user, one_user], "agt_a", "usr_2", "read", 0, 0)}
    assert other == {"L:d:agt_a", "L:u:agt_a:usr_2"}


def test_budgets_charge_the_cost_and_skip_free_intents() -> None:
    budget = Limit("b", "ten_1", None, None, None, "budget", 500, "day")
    assert [c.amount for c in charges([budget], "agt_a", None, "spend", 120, 0)] == [120]
    assert charges([budget], "agt_a", None, "spend", 0, 0) == []
