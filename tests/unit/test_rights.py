from valetkey.identity.models import Resource
from valetkey.identity.rights import default_role_scopes, user_rights

CRM = Resource(
    "res_1",
    "ten_1",
    "https://crm.example",
    ("deals:read", "deals:write", "deals:admin"),
    {"deals:admin": ("deals:write",), "deals:write": ("deals:read",)},
    0.0,
)
MAIL = Resource("res_2", "ten_1", "https://mail.example", ("mail:read", "mail:send"), {}, 0.0)


def test_defaults_admin_everything_others_read() -> None:
    assert default_role_scopes("admin", [CRM, MAIL]) == (
        "deals:read",
        "deals:write",
        "deals:admin",
        "mail:read",
        "mail:send",
    )
    assert default_role_scopes("member", [CRM, MAIL]) == ("deals:read", "mail:read")
    assert default_role_scopes("approver", [CRM]) == ("deals:read",)


def test_custom_mapping_replaces_the_default_and_implications_apply() -> None:
    custom = {"member": ["deals:write"]}
    assert user_rights(["member"], custom, [CRM, MAIL]) == {"deals:write", "deals:read"}
    assert "mail:read" not in user_rights(["member"], custom, [CRM, MAIL])
    assert user_rights(["member", "approver"], custom, [CRM, MAIL]) == {
        "deals:write",
        "deals:read",
        "mail:read",
    }
