// ModelRepository without its definition, for headers that only hold a pointer to one.
#pragma once

namespace normserve {

class ServedModel;
template <typename Model>
class ModelRepositoryT;
using ModelRepository = ModelRepositoryT<ServedModel>;

}  // namespace normserve
