#include "server/version_policy.h"

#include <algorithm>

namespace normserve {

std::vector<int64_t> SelectVersions(const VersionPolicy& policy,
                                    const std::set<int64_t>& candidates) {
  std::vector<int64_t> selected;
  if (!policy.specific.empty()) {
    for (int64_t version : candidates) {
      if (std::find(policy.specific.begin(), policy.specific.end(), version) !=
          policy.specific.end()) {
        selected.push_back(version);
      }
    }
    return selected;
  }
  for (auto it = candidates.rbegin();
       it != candidates.rend() && static_cast<int64_t>(selected.size()) < policy.latest; ++it) {
    selected.insert(selected.begin(), *it);
  }
  return selected;
}

}  // namespace normserve
