"""`valetkey mcp`: the upstream MCP servers behind ValetKey's `/mcp`, and per-tool
overrides of how their calls are decided."""

import typer

from valetkey.cli.common import JsonOpt, TenantOpt, console, fields, print_json, run, runtime, table
from valetkey.ids import new_id

app = typer.Typer(help="The MCP gateway (/mcp): upstream MCP servers and their tools.",
                  no_args_is_help=True)  # fmt: skip
upstreams_app = typer.Typer(help="Upstream MCP servers of a tenant.", no_args_is_help=True)
tools_app = typer.Typer(help="Per-tool overrides: class, resource, sanitising.",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(upstreams_app, name="upstreams")
app.add_typer(tools_app, name="tools")


@upstreams_app.command("add")
def add(
    name: str = typer.Argument(..., help="Short name; its tools are listed as NAME__TOOL."),
    tenant: str = TenantOpt,
    url: str = typer.Option(..., "--url", help="The upstream's streamable-HTTP endpoint."),
    provider: str = typer.Option(
        None, "--provider", help="The vault provider whose connection supplies its credential."
    ),
    sanitize: bool = typer.Option(
        False, "--sanitize/--no-sanitize", help="Sanitise the text of every result."
    ),
    json: bool = JsonOpt,
) -> None:
    """Add an upstream MCP server (the first one registers the {issuer}/mcp audience)."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.mcp_upstreams(new_id("cor"))
            data = (await svc.add(tenant, name, url, provider, sanitize)).view(svc.issuer)
        if json:
            print_json(data)
        else:
            fields("Upstream added", {k: data[k] for k in ("id", "name", "url", "provider",
                                                            "prefix", "audience")})  # fmt: skip

    run(go)


@upstreams_app.command("list")
def list_(tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """List the tenant's upstream MCP servers."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.mcp_upstreams(new_id("cor"))
            data = [u.view(svc.issuer) for u in await svc.list(tenant)]
        if json:
            print_json(data)
        else:
            rows = [(d["name"], d["url"], d["provider"], d["sanitize"], len(d["tools"]))
                    for d in data]  # fmt: skip
            table("MCP upstreams", ["name", "url", "provider", "sanitize", "overrides"], rows)

    run(go)


@upstreams_app.command("show")
def show(name: str, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Show an upstream and its tools' overrides."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.mcp_upstreams(new_id("cor"))
            data = (await svc.show(tenant, name)).view(svc.issuer)
        if json:
            print_json(data)
        else:
            fields(f"Upstream {name}", {k: v for k, v in data.items() if k != "tools"})
            _overrides(data["tools"])

    run(go)


@upstreams_app.command("remove")
def remove(name: str, tenant: str = TenantOpt, json: bool = JsonOpt) -> None:
    """Remove an upstream (its tools' actions stay: policies may name them)."""

    async def go() -> None:
        async with runtime() as rt:
            removed = await rt.mcp_upstreams(new_id("cor")).remove(tenant, name)
        if json:
            print_json({"id": removed.id, "name": removed.name, "removed": True})
        else:
            console.print(f"Upstream {name} removed.")

    run(go)


def _overrides(tools: dict[str, dict[str, object]]) -> None:
    rows = [(tool, o.get("class"), o.get("resource"), o.get("sanitize"))
            for tool, o in tools.items()]  # fmt: skip
    table("Tool overrides", ["tool", "class", "resource", "sanitize"], rows)


@tools_app.command("set")
def set_(
    upstream: str = typer.Argument(..., help="The upstream's name."),
    tool: str = typer.Argument(..., help="The tool's name at the upstream (without NAME__)."),
    tenant: str = TenantOpt,
    klass: str = typer.Option(
        None, "--class", help="read, write, delete, bulk, send or spend (wins over annotations)."
    ),
    resource: str = typer.Option(
        None, "--resource", help="A template over the arguments, e.g. crm:deals/{deal_id}."
    ),
    sanitize: bool = typer.Option(
        None, "--sanitize/--no-sanitize", help="Sanitise its results (wins over the upstream)."
    ),
    reset: bool = typer.Option(False, "--reset", help="Clear the tool's overrides first."),
    json: bool = JsonOpt,
) -> None:
    """Override how one tool's calls are decided (class, resource) and returned (sanitising)."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.mcp_upstreams(new_id("cor"))
            changed = await svc.set_tool(tenant, upstream, tool, klass=klass, resource=resource,
                                         sanitize=sanitize, reset=reset)  # fmt: skip
            data = {"upstream": changed.name, "tool": tool,
                    **(changed.tools[tool].to_json() if tool in changed.tools else {})}  # fmt: skip
        if json:
            print_json(data)
        else:
            fields(f"Tool {upstream}__{tool}", data)

    run(go)


@tools_app.command("list")
def tools_list(
    upstream: str = typer.Argument(..., help="The upstream's name."),
    tenant: str = TenantOpt,
    json: bool = JsonOpt,
) -> None:
    """The upstream's tools as the tenant knows them: their actions (registered as agents
    use them) and the admin's overrides."""

    async def go() -> None:
        async with runtime() as rt:
            svc = rt.mcp_upstreams(new_id("cor"))
            found = await svc.show(tenant, upstream)
            actions = await svc.actions(tenant, upstream)
        prefix = f"mcp:{found.name}."
        known = {a.name[len(prefix) :]: a for a in actions}
        names = sorted(set(known) | set(found.tools))
        data = [
            {"tool": name, "name": found.prefix + name, "action": prefix + name,
             "class": known[name].klass if name in known else None,
             "scope": known[name].scope if name in known else None,
             "override": found.tools[name].to_json() if name in found.tools else {}}
            for name in names
        ]  # fmt: skip
        if json:
            print_json(data)
        else:
            rows = [(found.prefix + name, prefix + name,
                     known[name].klass if name in known else None,
                     known[name].scope if name in known else None,
                     ", ".join(f"{k}={v}" for k, v in found.tools[name].to_json().items())
                     if name in found.tools else "")
                    for name in names]  # fmt: skip
            table(f"Tools of {upstream}", ["tool", "action", "class", "scope", "override"], rows)

    run(go)
