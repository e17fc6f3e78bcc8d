// The version policy of model.json as one function, used by the lifecycle both to choose
// what to load and to choose what to retire, so that the two can never disagree.
#pragma once

#include <cstdint>
#include <set>
#include <vector>

#include "server/model_json.h"

namespace normserve {

// The versions that should serve, oldest first, among `candidates`: the versions that serve
// now or could load. {"latest": N} takes the newest N of them (a broken newest version is no
// candidate, so the one below it takes its place); {"specific": [...]} takes those listed
// that are candidates.
std::vector<int64_t> SelectVersions(const VersionPolicy& policy,
                                    const std::set<int64_t>& candidates);

}  // namespace normserve
