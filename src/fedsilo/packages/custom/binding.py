"""A custom package's client data: tables, or folders read by the package's dataset.py.

A package without ``dataset.py`` binds ``train`` / ``test`` tables like ffnet (CSV or
parquet, the data_config's ``predictors`` and ``target``). With ``dataset.py`` the
``--train-path`` / ``--test-path`` are handed to the package's dataset class (a folder of
images, ...); the server is told the item counts only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedsilo.federation.binding import TRAIN_TEST, BoundData, DataBinding

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from fedsilo.packages.custom.loader import LoadedPackage

__all__ = ["CustomBinding", "custom_binding"]


@dataclass(frozen=True)
class CustomBinding(DataBinding):
    """:data:`TRAIN_TEST`, or the package's dataset class over the given paths."""

    package: LoadedPackage | None = None
    #: the datasets built by the last :meth:`bind`, by role, for the executor
    datasets: dict[str, Dataset[Any]] = field(default_factory=dict)

    def bind(
        self,
        data_config: Any,
        tables: Mapping[str, str | None],
        *,
        dataset_name: str | None = None,
        batch_size: int = 1,
        where: str = "The session",
    ) -> BoundData:
        if self.package is None or self.package.dataset_class is None:
            return super().bind(
                data_config, tables, dataset_name=dataset_name, batch_size=batch_size, where=where
            )
        import pandas as pd

        from fedsilo.data.dataset import LocalDataset
        from fedsilo.wire import DatasetSummary

        self.check_tables(tables, dataset_name, where)
        self.datasets.clear()
        for role in self.roles:
            path = tables.get(role)
            if path is not None:
                self.datasets[role] = self.package.build_dataset(path, data_config.dataset_params())
        counts = {role: len(ds) for role, ds in self.datasets.items()}  # type: ignore[arg-type]
        train = pd.DataFrame(index=range(counts["train"]))
        test = pd.DataFrame(index=range(counts["test"])) if "test" in counts else None
        return BoundData(
            dataset=LocalDataset(train=train, test=test, batch_size=batch_size),
            summary=DatasetSummary(
                train_rows=counts["train"], test_rows=counts.get("test", 0), columns=[]
            ),
            columns=[],
        )

    def describe(self, dataset: Any) -> str:
        if self.package is None or self.package.dataset_class is None:
            return super().describe(dataset)
        counts = ", ".join(f"{role} {len(ds)} items" for role, ds in self.datasets.items())  # type: ignore[arg-type]
        return f"dataset.py {self.package.dataset_class.__name__}: {counts}"


def custom_binding(package: LoadedPackage) -> CustomBinding:
    """The binding for ``package`` (the train/test roles and options of :data:`TRAIN_TEST`)."""
    return CustomBinding(tables=TRAIN_TEST.tables, join_hint=TRAIN_TEST.join_hint, package=package)
