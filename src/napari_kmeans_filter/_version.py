# The one place the version is written; the build reads it (pyproject.toml,
# [tool.hatch.version]). Between releases it is the next release with ".dev0";
# CHANGELOG.md says how a release bumps it and tags the commit.
__version__ = "0.1.0.dev0"
