"""Populations: N members of one architecture trained as one computation.

from weightlab.population import MemberSpec, Population
pop = Population(model_factory(MLP, [40, 300, 100, 10]), [MemberSpec(seed=s) for s in range(8)])
results = pop.fit(load_dataset("mnist1d"), TrainConfig(epochs=5))
"""

from weightlab.population.buckets import BucketedPopulation, useful_matmul_flops
from weightlab.population.population import Population
from weightlab.population.spec import MemberSpec, build_member

__all__ = ["BucketedPopulation", "MemberSpec", "Population", "build_member", "useful_matmul_flops"]
