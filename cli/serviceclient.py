"""The client side of services, tasks, secrets, configs and networks: the managers'
`Control` RPCs beyond nodes, on a `SwarmClient` (same channel, same failure mapping).

Calls raise `CliError`s, never `grpc.RpcError`. A reference the managers cannot find
raises docker's words: `NoSuchService` ("Error: No such service: web"), `NoSuchTask`,
`NoSuchSecret`, `NoSuchConfig`, `NoSuchNetwork`. Any other status is a `DaemonError` shown as it comes
(e.g. a stale version's "update out of sequence").

    with serviceclient.current() as client:
        service = client.get_service("web")
        client.update_service(service.meta.id, version=service.meta.version, spec=spec)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from cli.client import DaemonError
from cli.main import current_host
from cli.swarmclient import SwarmClient

if TYPE_CHECKING:
    from api import objects_pb2 as opb
    from api import swarm_pb2 as spb

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class NoSuchObject(DaemonError):
    """A reference the managers do not know: docker's `Error: No such <kind>: <ref>`."""

    kind = "object"

    def __init__(self, ref: str) -> None:
        super().__init__(ref, status="NOT_FOUND", hinted_exit_code=None)
        self.message = f"Error: No such {self.kind}: {ref}"
        self.args = (self.message,)


class NoSuchService(NoSuchObject):
    kind = "service"


class NoSuchTask(NoSuchObject):
    kind = "task"


class NoSuchSecret(NoSuchObject):
    kind = "secret"


class NoSuchConfig(NoSuchObject):
    kind = "config"


class NoSuchNetwork(NoSuchObject):
    kind = "network"


def current() -> ServiceClient:
    """A connection to the daemon chosen by `-H`/`$PYSWARM_HOST`."""
    return ServiceClient.open(current_host())


class ServiceClient(SwarmClient):
    """SwarmClient plus services, tasks, logs, secrets, configs and networks: one method
    per RPC."""

    def _lookup(
        self, rpc: Callable[[Req], Resp], request: Req, missing: type[NoSuchObject], ref: str
    ) -> Resp:
        try:
            return self._call(rpc, request)
        except DaemonError as e:
            if e.status == "NOT_FOUND" and not isinstance(e, NoSuchObject):
                raise missing(ref) from None
            raise

    def _stream(self, rpc: Callable[[Req], Iterator[Resp]], request: Req) -> Iterator[Resp]:
        import grpc

        from cli.client import daemon_error

        try:
            yield from rpc(request)
        except grpc.RpcError as err:
            raise daemon_error(self.host, err) from None

    # ---- services ----

    def create_service(self, spec: opb.ServiceSpec) -> opb.Service:
        from api import swarm_pb2 as spb

        return self._call(self._control.CreateService, spb.CreateServiceRequest(spec=spec))

    def get_service(self, ref: str) -> opb.Service:
        """The service `ref` names: an id, an id prefix or a name."""
        from api import swarm_pb2 as spb

        return self._lookup(
            self._control.GetService, spb.ServiceRef(service=ref), NoSuchService, ref
        )

    def list_services(self) -> list[spb.ServiceInfo]:
        from api import swarm_pb2 as spb

        return list(self._call(self._control.ListServices, spb.Empty()).services)

    def update_service(
        self,
        service_id: str,
        *,
        version: int,
        spec: opb.ServiceSpec | None = None,
        rollback: bool = False,
    ) -> opb.Service:
        from api import swarm_pb2 as spb

        request = spb.UpdateServiceRequest(
            service_id=service_id, version=version, spec=spec, rollback=rollback
        )
        return self._lookup(self._control.UpdateService, request, NoSuchService, service_id)

    def remove_service(self, ref: str) -> None:
        from api import swarm_pb2 as spb

        self._lookup(self._control.RemoveService, spb.ServiceRef(service=ref), NoSuchService, ref)

    # ---- tasks and logs ----

    def list_tasks(
        self,
        *,
        services: Sequence[str] = (),
        nodes: Sequence[str] = (),
        task_ids: Sequence[str] = (),
        desired_states: Sequence[int] = (),
    ) -> list[opb.Task]:
        from api import swarm_pb2 as spb

        request = spb.ListTasksRequest(
            services=services,
            nodes=nodes,
            task_ids=task_ids,
            desired_states=desired_states,  # type: ignore[arg-type]  # TaskState values
        )
        return list(self._call(self._control.ListTasks, request).tasks)

    def get_task(self, ref: str) -> opb.Task:
        from api import swarm_pb2 as spb

        return self._lookup(self._control.GetTask, spb.TaskRef(task=ref), NoSuchTask, ref)

    def service_logs(
        self, refs: Sequence[str], *, follow: bool, tail: int, since: float
    ) -> Iterator[spb.LogMessage]:
        """The log lines of services or tasks (ids, prefixes, names), as they come."""
        from api import swarm_pb2 as spb

        request = spb.ServiceLogsRequest(refs=refs, follow=follow, tail=tail, since=since)
        return self._stream(self._control.ServiceLogs, request)

    # ---- secrets ----

    def create_secret(
        self, name: str, data: bytes, *, labels: dict[str, str] | None = None
    ) -> opb.Secret:
        from api import objects_pb2 as opb

        spec = opb.SecretSpec(name=name, data=data, labels=labels or {})
        return self._call(self._control.CreateSecret, spec)

    def get_secret(self, ref: str) -> opb.Secret:
        from api import swarm_pb2 as spb

        return self._lookup(self._control.GetSecret, spb.ObjectRef(ref=ref), NoSuchSecret, ref)

    def list_secrets(self) -> list[opb.Secret]:
        from api import swarm_pb2 as spb

        return list(self._call(self._control.ListSecrets, spb.Empty()).secrets)

    def remove_secret(self, ref: str) -> None:
        from api import swarm_pb2 as spb

        self._lookup(self._control.RemoveSecret, spb.ObjectRef(ref=ref), NoSuchSecret, ref)

    # ---- configs ----

    def create_config(
        self, name: str, data: bytes, *, labels: dict[str, str] | None = None
    ) -> opb.Config:
        from api import objects_pb2 as opb

        spec = opb.SecretSpec(name=name, data=data, labels=labels or {})
        return self._call(self._control.CreateConfig, spec)

    def get_config(self, ref: str) -> opb.Config:
        from api import swarm_pb2 as spb

        return self._lookup(self._control.GetConfig, spb.ObjectRef(ref=ref), NoSuchConfig, ref)

    def list_configs(self) -> list[opb.Config]:
        from api import swarm_pb2 as spb

        return list(self._call(self._control.ListConfigs, spb.Empty()).configs)

    def remove_config(self, ref: str) -> None:
        from api import swarm_pb2 as spb

        self._lookup(self._control.RemoveConfig, spb.ObjectRef(ref=ref), NoSuchConfig, ref)

    # ---- networks ----

    def create_network(self, spec: opb.NetworkSpec) -> opb.Network:
        return self._call(self._control.CreateNetwork, spec)

    def get_network(self, ref: str) -> opb.Network:
        """The network `ref` names: an id, an id prefix or a name."""
        from api import swarm_pb2 as spb

        return self._lookup(self._control.GetNetwork, spb.ObjectRef(ref=ref), NoSuchNetwork, ref)

    def list_networks(self) -> list[opb.Network]:
        from api import swarm_pb2 as spb

        return list(self._call(self._control.ListNetworks, spb.Empty()).networks)

    def remove_network(self, ref: str) -> None:
        from api import swarm_pb2 as spb

        self._lookup(self._control.RemoveNetwork, spb.ObjectRef(ref=ref), NoSuchNetwork, ref)

    def prune_networks(self) -> list[str]:
        """Remove the networks no service uses; the names of those removed."""
        from api import swarm_pb2 as spb

        return list(self._call(self._control.PruneNetworks, spb.Empty()).deleted)
