# A check derivation that fails when `target`'s build closure contains GHC (see no-haskell-check.sh).
# `unsafeDiscardOutputDependency` turns the .drv path into a plain input: the .drv files must be
# present, their outputs need not be built. (exportReferencesGraph cannot do this: it also wants
# every output of every derivation in the graph to exist.)
{
  runCommand,
  target,
  name ? "${target.name}-no-haskell",
}:

runCommand name
  {
    target = builtins.unsafeDiscardOutputDependency target.drvPath;
    preferLocalBuild = true;
  }
  ''
    sh ${./no-haskell-check.sh} "$target" "$out"
  ''
