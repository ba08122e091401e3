"""The tutorials cannot rot: docs/getting-started.md and docs/tutorial-gitops.md are run,
block by block, against the real control plane and the ThingSpace simulator (the demo
environment), and every output they show is checked.

The convention for a page (tests/e2e/tutorials.py reads it):

- A fenced block with language ``sh`` (or ``bash``, ``shell``) runs: with bash and
  ``set -euo pipefail``, in order, as in one terminal. Each block starts where the
  previous one left off (working directory, exported variables), in a temporary directory
  that links ``charts/``, ``crds/`` and ``examples/`` from the checkout, so the page reads
  the repository and whatever it writes stays there. A block must exit 0 within
  BLOCK_TIMEOUT seconds; a wait in a page is ``kubectl wait ... --timeout=60s``, never a
  sleep.
- A fenced ``text`` block right after a shell block (blank lines only between them) is
  that block's output, stdout and stderr as a terminal shows them. It is compared after
  normalising what varies: timestamps, uids and ages (``5s``, ``2m3s``) become
  placeholders, runs of spaces become one (column widths), blank lines are left out. A line
  ``...`` stands for any number of lines: the page shows an excerpt and leaves out the rest,
  resource versions and other varying details included. A shell block with no output block
  after it is only checked for its exit code.
- ``<!-- not run -->`` (or ``<!-- not run: why -->``) as the last line before a fence (an
  HTML comment: MkDocs and GitHub show nothing) leaves the block out: what a reader does
  differently from the test (their own registry, cluster, credentials or listener, an
  alternative to a step that ran), said in the page's prose too. Other languages (``yaml``)
  never run.

The test plays the rest of the reader's world: KUBECONFIG points at the real control plane;
PATH has its kubectl, helm (.tools/helm) and the virtualenv's scripts (``kubectl
thingspace``, ``thingspace-sim``, ``thingspace-operator``); a fresh simulator stands in for
ThingSpace; and since this API server runs no pods, the test starts ``thingspace-operator
run`` (an OperatorProcess, with the ServiceAccount, args and environment of the chart's
Deployment, pointed at the simulator) as soon as a page's ``helm install`` has created that
Deployment. What a not-run block would have set (the credentials, THINGSPACE_API_URL), the
test sets. Whatever a page created (namespaces, releases, callbacks) is removed afterwards.
"""

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.cluster import (
    DEMO_CREDENTIALS,
    HELM,
    SCRIPTS,
    OperatorProcess,
    Release,
    Simulator,
    remove_callbacks,
)
from tests.e2e.controlplane import ROOT, Cluster
from tests.e2e.tutorials import Block, Terminal, blocks, matches, normalised, run_page

DOCS = ROOT / "docs"
BLOCK_TIMEOUT = 90.0
#: What a page links from the checkout into its working directory.
CHECKOUT = ("charts", "crds", "examples")
CRDS = ("thingspacecallbacks.thingspace.io", "thingspaceaccounts.thingspace.io")
#: The release both pages install: its namespace and name.
PAGE_RELEASE = ("thingspace-operator", "thingspace-operator")
OWNER = ("meta.helm.sh/release-namespace", "meta.helm.sh/release-name")
CREDENTIALS = {
    "THINGSPACE_APP_KEY": DEMO_CREDENTIALS["appKey"],
    "THINGSPACE_APP_SECRET": DEMO_CREDENTIALS["appSecret"],
    "THINGSPACE_USERNAME": DEMO_CREDENTIALS["username"],
    "THINGSPACE_PASSWORD": DEMO_CREDENTIALS["password"],
}


@dataclass
class Nodes:
    """What the nodes of a real cluster would run: the operator of each Deployment the
    chart creates, as a local process pointed at the simulator."""

    plane: Cluster
    sim: Simulator
    workdir: Path
    operators: dict[str, OperatorProcess] = field(default_factory=dict)

    def sync(self) -> None:
        listed = self.plane.kubectl_json(
            "get", "deployments", "-A", "-l", "app.kubernetes.io/name=thingspace-operator"
        )
        for item in listed["items"]:
            meta = item["metadata"]
            if meta["uid"] not in self.operators:
                release = Release(
                    self.plane, meta["namespace"], name=meta["labels"]["app.kubernetes.io/instance"]
                )
                self.operators[meta["uid"]] = OperatorProcess(release, self.sim, self.workdir)
                self.operators[meta["uid"]].start()

    def logs(self) -> str:
        return "".join(
            f"\n--- operator log ({operator.log_path.name}), last lines\n{operator.log()[-3000:]}"
            for operator in self.operators.values()
        )

    def stop(self) -> None:
        for operator in self.operators.values():
            operator.stop()


@contextlib.contextmanager
def crds_lent_to_the_page(plane: Cluster) -> Iterator[None]:
    """On a fresh cluster the page's ``helm install`` creates the CRDs. In a run of the
    whole suite an earlier release may hold them (kept on uninstall), and helm refuses to
    install another release over them: they are lent to the page's release meanwhile."""
    lent: dict[str, dict[str, str]] = {}
    for crd in CRDS:
        found = plane.kubectl("get", "crd", crd, "-o", "json", check=False)
        if found.returncode != 0:
            continue
        annotations = json.loads(found.stdout)["metadata"].get("annotations") or {}
        owner = {key: annotations.get(key, "") for key in OWNER}
        if tuple(owner.values()) != PAGE_RELEASE:
            lent[crd] = owner
            annotate(plane, crd, dict(zip(OWNER, PAGE_RELEASE, strict=True)))
    try:
        yield
    finally:
        for crd, owner in lent.items():
            annotate(plane, crd, owner)


def annotate(plane: Cluster, crd: str, annotations: dict[str, str]) -> None:
    pairs = [f"{key}={value}" if value else f"{key}-" for key, value in annotations.items()]
    plane.kubectl("annotate", "--overwrite", "crd", crd, *pairs)


def namespaces(plane: Cluster) -> set[str]:
    return {item["metadata"]["name"] for item in plane.kubectl_json("get", "ns")["items"]}


def releases(plane: Cluster) -> set[tuple[str, str]]:
    listed = Release(plane, "default").helm("list", "-A", "-o", "json")
    return {(item["namespace"], item["name"]) for item in json.loads(listed.stdout)}


def reader_env(plane: Cluster, home: Path, **variables: str) -> dict[str, str]:
    """A reader's shell: nothing of ours (THINGSPACE_*, KUBECONFIG) but what we set."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("THINGSPACE_", "KUBECONFIG", "E2E_", "KUBERNETES_"))
    }
    path = [str(plane.bin), str(HELM.parent), str(SCRIPTS), env.get("PATH", "/usr/bin:/bin")]
    env.update(KUBECONFIG=str(plane.admin_kubeconfig), HOME=str(home), PATH=os.pathsep.join(path))
    env.update(variables)
    return env


def run_tutorial(
    plane: Cluster,
    tmp_path: Path,
    page: str,
    variables: Callable[[Simulator], dict[str, str]],
    then: Callable[[Simulator], None] = lambda sim: None,
) -> list[Block]:
    """Run ``page`` in a demo environment of its own, with the reader's ``variables``;
    ``then`` checks what the page claims beyond its outputs, before what the page created
    is removed (pass or fail). Returns the blocks run."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in CHECKOUT:
        (workdir / name).symlink_to(ROOT / name)
    (tmp_path / "home").mkdir()
    namespaces_before, releases_before = namespaces(plane), releases(plane)
    sim = Simulator(tmp_path)
    nodes = Nodes(plane, sim, tmp_path)
    env = reader_env(plane, tmp_path / "home", **variables(sim))
    terminal = Terminal(workdir, tmp_path / "blocks", env)
    try:
        with crds_lent_to_the_page(plane):
            try:
                ran = run_page(DOCS / page, terminal, BLOCK_TIMEOUT, nodes.sync, nodes.logs)
                then(sim)
            finally:
                terminal.close()
                created = sorted(namespaces(plane) - namespaces_before)
                for namespace in created:  # deregistered by the operator that still runs
                    with contextlib.suppress(AssertionError):
                        remove_callbacks(plane, namespace, deregister=True)
                nodes.stop()
                for namespace, name in releases(plane) - releases_before:
                    Release(plane, namespace, name=name).uninstall()
                if created:
                    plane.kubectl("delete", "namespace", *created, "--timeout=120s", check=False)
    finally:
        sim.stop()
    return ran


def checked(ran: list[Block]) -> int:
    return sum(block.expected is not None for block in ran)


def test_getting_started(plane: Cluster, tmp_path: Path) -> None:
    # The reader's own credentials (a not-run block): here, the simulator's.
    ran = run_tutorial(plane, tmp_path, "getting-started.md", lambda sim: CREDENTIALS)
    assert len(ran) >= 5, [block.title for block in ran]
    assert checked(ran) >= 5, [block.title for block in ran]


def test_tutorial_gitops(plane: Cluster, tmp_path: Path) -> None:
    def adopted_with_no_write(sim: Simulator) -> None:
        assert sim.writes() == 0, "the page says applying the export makes no ThingSpace write"

    # The port-forward to the staging release's simulator (a not-run block): ours.
    ran = run_tutorial(
        plane,
        tmp_path,
        "tutorial-gitops.md",
        lambda sim: {"THINGSPACE_API_URL": sim.url},
        then=adopted_with_no_write,
    )
    assert len(ran) >= 7, [block.title for block in ran]
    assert checked(ran) >= 5, [block.title for block in ran]


def test_a_page_that_no_longer_tells_the_truth_fails(tmp_path: Path) -> None:
    """The runner itself, with no cluster: state carries from block to block, what varies
    is normalised, ``...`` elides, not-run blocks are skipped, and a changed output fails
    with the page, the block's first line, expected and got."""
    page = tmp_path / "page.md"
    page.write_text(
        "Intro.\n\n```sh\nexport GREETING=hello\nmkdir -p out && cd out\n```\n\n"
        "<!-- not run: a reader's own -->\n```sh\nexit 3\n```\n\n"
        '```sh\necho "$GREETING from $(basename "$PWD")"\n'
        'printf "NAME   AGE\\nfirst  5s\\n"\necho 2026-12-07T23:18:46Z done >&2\n```\n\n'
        "```text\nhello from out\n...\nfirst   2m10s\n2020-01-01T00:00:00Z done\n```\n\n"
        "```yaml\nkind: NotRun\n```\n"
    )
    found = blocks(page)
    assert [(b.language, b.run, b.expected is not None) for b in found] == [
        ("sh", True, False),
        ("sh", False, False),
        ("sh", True, True),
        ("yaml", False, False),
    ]
    assert normalised("a   5s\n\n 3d4h  x ") == ["a <age>", "<age> x"]
    assert matches("x\n...\n", "x\n")
    assert not matches("x\ny\n", "x\n")
    terminal = Terminal(tmp_path, tmp_path / "state", {"PATH": os.environ["PATH"]})
    assert len(run_page(page, terminal, timeout=10)) == 2

    page.write_text(page.read_text().replace("hello from out", "goodbye from out"))
    with pytest.raises(AssertionError) as failed:
        run_page(page, Terminal(tmp_path, tmp_path / "again", {"PATH": os.environ["PATH"]}))
    message = str(failed.value)
    assert 'page.md:13 `echo "$GREETING from $(basename "$PWD")"`' in message
    assert "--- expected (the page)\ngoodbye from out" in message
    assert "--- got\nhello from out" in message
