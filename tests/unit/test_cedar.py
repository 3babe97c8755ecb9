"""The decision point's Cedar layer: the default policy set's precomputed answers."""

import pytest

from valetkey.identity.models import CLASSES
from valetkey.policy.cedar import DEFAULT_POLICIES, CompiledPolicies


@pytest.mark.parametrize("klass", CLASSES)
@pytest.mark.parametrize("approved", [False, True])
@pytest.mark.parametrize("on_behalf", [False, True])
def test_the_default_sets_precomputed_outcomes_are_cedars(
    klass: str, approved: bool, on_behalf: bool
) -> None:
    """The shortcut for the default policy set answers exactly as a full evaluation of a
    real request does: a registered action of the class, a real agent, user and resource."""
    actions = [(f"crm:things.{klass}", klass)]
    compiled = CompiledPolicies(DEFAULT_POLICIES, actions, 1)
    shortcut = compiled.by_class(klass, approved)
    assert shortcut is not None
    entities = [
        {"uid": {"type": "Agent", "id": "agt_1"}, "attrs": {"name": "bot", "sponsor": "u"},
         "parents": []},
        {"uid": {"type": "Resource", "id": "crm:deals/1"}, "attrs": {"kind": "crm"},
         "parents": []},
        {"uid": {"type": "User", "id": "usr_1"}, "attrs": {"email": "m@x", "roles": []},
         "parents": []},
    ]  # fmt: skip
    context = {"class": klass, "approved": approved, "count": 3, "cost": 0,
               "on_behalf": on_behalf, "counters": dict.fromkeys(CLASSES, 1), "spent_today": 0,
               "request": "anything", "channel": "gateway", "environment": ""}  # fmt: skip
    full = compiled.evaluate(("Agent", "agt_1"), f"crm:things.{klass}",
                             ("Resource", "crm:deals/1"), context, entities)  # fmt: skip
    assert (shortcut.decision, set(shortcut.policies)) == (full.decision, set(full.policies))
    other = DEFAULT_POLICIES.replace('Action::"write"]', 'Action::"write", Action::"send"]')
    assert CompiledPolicies(other, actions, 3).by_class(klass, approved) is None
