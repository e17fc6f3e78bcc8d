#include "server/model_repository.h"

#include "models/served_model.h"

namespace normserve {

template class ModelRepositoryT<ServedModel>;

std::shared_ptr<const ServedModel> LoadAndWarmUp(const std::string& dir, const std::string& name,
                                                 int64_t version, const std::string& device) {
  auto model = ServedModel::Load(dir, name, version, device);
  if (model->config().is_mt()) {
    TranslationOptions options;
    options.beam_size = 1;
    options.max_length_a = 0;
    options.max_length_b = 2;
    model->Translate({"warm up"}, options);
  } else {
    model->ScoreTexts({"warm up"});
  }
  return model;
}

}  // namespace normserve
