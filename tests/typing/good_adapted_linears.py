"""Right: an adapted linear satisfies its base's slot Protocol, so a typed spec stays true.

Covers ``bad_adapted_linears``.
"""

from megaspec.builders import ColumnLinear, RowLinear
from megaspec.parallel import ColumnParallelLinear, ParallelGroups, RowParallelLinear, normal_init
from megaspec.peft import AdaptedColumnLinear, AdaptedRowLinear

groups = ParallelGroups.single()
column_base = ColumnParallelLinear(input_size=8, output_size=8, groups=groups, init_method=normal_init(0.02))
row_base = RowParallelLinear(input_size=8, output_size=8, groups=groups, init_method=normal_init(0.02))

column: ColumnLinear = AdaptedColumnLinear(column_base, "lora", groups)
row: RowLinear = AdaptedRowLinear(row_base, "lora", groups)
nested: ColumnLinear = AdaptedColumnLinear(AdaptedColumnLinear(column_base, "ia3", groups), "lora", groups)
