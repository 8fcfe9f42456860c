"""Build hook: ship ``zaqar-otel.pth`` beside the package (see it for why)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "zaqar-otel.pth"


class BuildPyWithPth(build_py):
    """Also copies ``zaqar-otel.pth`` to the top of site-packages."""

    def run(self) -> None:
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode),
                os.path.join(self.build_lib, PTH)]


setup(cmdclass={"build_py": BuildPyWithPth})
