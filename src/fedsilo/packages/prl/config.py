"""The prl package's configs: which clients take part and which columns identify a record.

The data_config is the seed documentation's ``prl_data_config``, with the protocol
optional::

    {
      "clients": {
        "passive_client": {"id_columns": ["id"]},
        "active_client": {"id_columns": ["id"]}
      },
      "psi_protocol": "keyed_hash"        # or "ecdh" (two clients)
    }

The number of clients named is the number expected. Id columns pair up by position: the
``j``-th id column of every client holds the same identifier (their names may differ).
The model_config is empty (``{}``): PRL trains nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from fedsilo.federation import DataConfigBase
from fedsilo.wire import CLIENT_NAME_PATTERN

__all__ = ["MAX_ID_COLUMNS", "PrlClientConfig", "PrlDataConfig", "PrlModelConfig", "PsiProtocol"]

#: id columns per client; a record key of more columns is a data-model problem, not an id
MAX_ID_COLUMNS = 16
PsiProtocol = Literal["keyed_hash", "ecdh"]


class PrlModelConfig(BaseModel):
    """Empty: a PRL session has nothing to configure beyond its data_config."""

    model_config = ConfigDict(extra="forbid")


class PrlClientConfig(BaseModel):
    """One client's part of the data_config.

    Attributes
    ----------
    id_columns : list of str
        The columns whose values, together, identify a record (1 to 16, no repeats).
    """

    model_config = ConfigDict(extra="forbid")

    id_columns: list[str] = Field(min_length=1, max_length=MAX_ID_COLUMNS)

    @model_validator(mode="after")
    def _distinct(self) -> PrlClientConfig:
        if any(not c for c in self.id_columns):
            raise PydanticCustomError("id_columns", "an id column name cannot be empty")
        if len(set(self.id_columns)) != len(self.id_columns):
            raise PydanticCustomError(
                "id_columns",
                "id columns must be distinct; got {columns}",
                {"columns": self.id_columns},
            )
        return self


class PrlDataConfig(DataConfigBase):
    """The clients of a PRL session and the protocol (see the module docstring).

    Attributes
    ----------
    clients : dict of str to PrlClientConfig
        Client name -> its id columns; at least two clients, each with as many id columns.
    psi_protocol : {"keyed_hash", "ecdh"}, default "keyed_hash"
        ``keyed_hash``: the clients agree a secret through sealed messages and send keyed
        hashes of their ids; the server intersects them. ``ecdh``: two clients run an
        ECDH private set intersection between them; the server relays sealed payloads and
        learns only the alignment (see the package docstring for what each party learns).
    """

    model_config = ConfigDict(extra="forbid")

    clients: dict[str, PrlClientConfig] = Field(min_length=2, max_length=100)
    psi_protocol: PsiProtocol = "keyed_hash"

    @model_validator(mode="after")
    def _consistent(self) -> PrlDataConfig:
        for name in self.clients:
            if not CLIENT_NAME_PATTERN.match(name):
                raise PydanticCustomError(
                    "client_name",
                    "client name {name} must start with a letter or digit and contain only "
                    "letters, digits and '_.@:-' (at most 128 characters)",
                    {"name": repr(name)},
                )
        widths = {name: len(c.id_columns) for name, c in self.clients.items()}
        if len(set(widths.values())) > 1:
            raise PydanticCustomError(
                "id_columns",
                "every client needs the same number of id columns (they pair up by "
                "position); got {widths}",
                {"widths": widths},
            )
        if self.psi_protocol == "ecdh" and len(self.clients) != 2:
            raise PydanticCustomError(
                "psi_protocol",
                "psi_protocol 'ecdh' links exactly two clients; got {n} (use 'keyed_hash' "
                "for more)",
                {"n": len(self.clients)},
            )
        return self

    def required_columns(self) -> list[str]:
        # Each client reads its own id columns (id_columns_of), checked by the executor
        # before joining: ids may be strings, so the generic numeric checks do not apply.
        return []

    def id_columns_of(self, client_name: str) -> list[str]:
        """The id columns of ``client_name``.

        Raises
        ------
        KeyError
            When the data_config does not name that client (the message lists those it does).
        """
        client = self.clients.get(client_name)
        if client is None:
            raise KeyError(
                f"client {client_name!r} is not one of this PRL session's clients "
                f"{sorted(self.clients)}; join with --client-name set to one of them"
            )
        return list(client.id_columns)
