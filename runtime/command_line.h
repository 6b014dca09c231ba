// ParseCommandLine: every moe-serve program's flags, parsed by Abseil, with a --help that
// lists the program's own flags (Abseil's default matches only flags defined in a file named
// after the binary, so ours printed "No flags matched").
//
//   int main(int argc, char** argv) {
//     moe::ParseCommandLine(argc, argv, "Writes a random-weight MoE model: moe-make-model --config F --out DIR");
#pragma once

#include <vector>

namespace moe {

// Sets `usage` as the program's usage message, parses argv and returns the positional
// arguments (argv[0] first). --help and --helpshort list every flag defined outside Abseil.
std::vector<char*> ParseCommandLine(int argc, char** argv, const char* usage);

}  // namespace moe
