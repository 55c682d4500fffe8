"""Wrong: an adapted linear in the other kind's slot.

The wrapper keeps its base's marker (``gather_output`` or ``input_is_parallel``), so an
adapted column-parallel linear is still no row-parallel one, and the other way round.
"""

from megaspec.builders import ColumnLinear, RowLinear
from megaspec.parallel import ColumnParallelLinear, ParallelGroups, RowParallelLinear, normal_init
from megaspec.peft import AdaptedColumnLinear, AdaptedRowLinear

groups = ParallelGroups.single()
column_base = ColumnParallelLinear(input_size=8, output_size=8, groups=groups, init_method=normal_init(0.02))
row_base = RowParallelLinear(input_size=8, output_size=8, groups=groups, init_method=normal_init(0.02))

row: RowLinear = AdaptedColumnLinear(column_base, "lora", groups)  # expect: assignment
column: ColumnLinear = AdaptedRowLinear(row_base, "lora", groups)  # expect: assignment
