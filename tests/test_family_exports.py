"""Every name a family package exports lazily resolves to its module's object."""

import importlib

import pytest


@pytest.mark.parametrize(
    ("package", "table"),
    [
        ("weightlab.kernels", "_LAZY"),
        ("weightlab.adapters", "_EXPORTS"),
        ("weightlab.probes", "_EXPORTS"),
        ("weightlab.quant", "_EXPORTS"),
        ("weightlab.growth", "_EXPORTS"),
        ("weightlab.hyper", "_EXPORTS"),
        ("weightlab.dynamics", "_EXPORTS"),
    ],
)
def test_lazy_exports_resolve(package: str, table: str) -> None:
    mod = importlib.import_module(package)
    modules = getattr(mod, table)
    assert sorted(modules) == mod.__all__
    for name in mod.__all__:
        source = importlib.import_module(f"{package}.{modules[name]}")
        assert getattr(mod, name) is getattr(source, name), name
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018


def test_random_feature_sampler_registered_without_kernels_import() -> None:
    from weightlab.init import get_initializer

    assert type(get_initializer("shifted_normal")).__name__ == "ShiftedNormal"


@pytest.mark.parametrize(
    ("package", "name"),
    [("weightlab.probes", "cka"), ("weightlab.probes", "spectra"), ("weightlab.growth", "widen")],
)
def test_a_name_equal_to_its_submodule_stays_the_exported_object(package: str, name: str) -> None:
    # importing the submodule binds the module to the package attribute; the export wins
    source = importlib.import_module(f"{package}.{name}")
    mod = importlib.import_module(package)
    assert getattr(mod, name) is getattr(source, name)
    assert callable(getattr(mod, name))
