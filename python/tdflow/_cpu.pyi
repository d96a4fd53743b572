"""Type stubs of tdflow's CPU probe and build settings (cpp/cpu.cpp)."""
from typing import Dict, Union

arch: str  # "x86_64", "aarch64" or "other"
compiler: str
eigen_version: str
build_type: str
level_flags: str  # "level=flags|level=flags"

def features() -> Dict[str, bool]: ...
def compiler_levels() -> Dict[str, bool]: ...
def openmp() -> Dict[str, Union[int, str]]: ...
